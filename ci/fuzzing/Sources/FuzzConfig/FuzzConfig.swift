import FuzzDriver
import Engine

/// The config parser: the input is YAML merged over the defaults; its lines, taken as
/// `KEY VALUE` command-line overrides, are merged too. Any input must end in a config or a
/// `ConfigError`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: count), as: UTF8.self)
    var cfg = Config()
    try? cfg.merge(yaml: text, source: "fuzz.yaml")
    var overrides = Config()
    let words = text.split(whereSeparator: { $0 == "\n" || $0 == " " }).map(String.init)
    try? overrides.merge(overrides: words)
    return 0
}

@_cdecl("FuzzConfig_main")
public func fuzzConfigMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzConfig)
}
