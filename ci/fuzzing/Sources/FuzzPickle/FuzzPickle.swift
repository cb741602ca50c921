import Foundation
import FuzzDriver
import Pickle

/// The weight-file readers: a PyTorch zip archive when the input starts like a zip, else a pickle.
/// Any input must end in a value or a `PickleError` — never a crash, a hang or an unbounded allocation.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPickle(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: count))
    if bytes.starts(with: [0x50, 0x4B]) {
        _ = try? TorchArchive.load(data: Data(bytes), file: "fuzz.pth")
    } else {
        _ = try? PickleReader(bytes: bytes, file: "fuzz.pkl").read()
    }
    return 0
}

@_cdecl("FuzzPickle_main")
public func fuzzPickleMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzPickle)
}
