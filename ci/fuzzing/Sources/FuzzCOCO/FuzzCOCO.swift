import FuzzDriver
import COCO
import Foundation

/// The COCO JSON loaders: an annotation file (fast scanner, then JSONDecoder for the error) and
/// a results file checked against it. Any input must end in a value or a `COCOError`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCOCO(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Data(bytes: data, count: count)
    let file = try? COCOFile.parse(bytes, source: "fuzz.json")
    _ = try? Detection.parse(bytes, source: "fuzz-results.json", groundTruth: file)
    return 0
}

@_cdecl("FuzzCOCO_main")
public func fuzzCOCOMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzCOCO)
}
