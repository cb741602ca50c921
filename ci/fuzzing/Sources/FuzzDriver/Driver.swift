/// A libFuzzer target: one input in, 0 out.
public typealias FuzzTarget = @convention(c) (UnsafePointer<UInt8>, Int) -> CInt

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ target: FuzzTarget) -> CInt

/// Runs libFuzzer's driver on `target`, as libFuzzer's own `main` would.
///
/// Each target needs this because SwiftPM links an executable with `main` aliased to
/// `<Target>_main`, a symbol `-parse-as-library` never emits; the targets define it and call here.
public func runFuzzer(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ target: FuzzTarget) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, target)
}
