import FuzzDriver
import Imaging

/// The JPEG decode path as the loader uses it: header probe, then a decode at the scale the
/// first byte picks (full, 1/2, 1/4, 1/8) in either channel order. Any input must end in an
/// image or a `JPEGError` — never a crash, a hang or an unbounded allocation.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJPEG(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count > 0 else { return 0 }
    let selector = data[0]
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: count - 1))
    let scales: [JPEG.Scale] = [.full, .half, .quarter, .eighth]
    _ = try? JPEG.info(bytes, source: "fuzz input")
    if let image = try? JPEG.decode(bytes, order: selector & 4 == 0 ? .rgb : .bgr, scale: scales[Int(selector & 3)],
                                    source: "fuzz input") {
        precondition(image.pixels.count == image.width * image.height * 3, "decoded buffer does not match its size")
    }
    return 0
}

@_cdecl("FuzzJPEG_main")
public func fuzzJPEGMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzJPEG)
}
