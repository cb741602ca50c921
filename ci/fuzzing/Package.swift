// swift-tools-version: 6.1
// libFuzzer targets for SwiftDetectron's parsers. Not part of the main build: `ci/fuzz` builds
// them with `-sanitize=fuzzer,address` and runs each for a bounded time over the seed corpus in
// `corpus/<target>/`. Each target's entry point is `LLVMFuzzerTestOneInput`; libFuzzer brings
// `main`, hence `-parse-as-library`.
import PackageDescription

let package = Package(
    name: "SwiftDetectronFuzzing",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "SwiftDetectron", path: "../..")],
    targets: [
        .target(name: "FuzzDriver", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(name: "FuzzJPEG", dependencies: ["FuzzDriver", .product(name: "Imaging", package: "SwiftDetectron")],
                          swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(name: "FuzzCOCO", dependencies: ["FuzzDriver", .product(name: "COCO", package: "SwiftDetectron")],
                          swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(name: "FuzzPickle", dependencies: ["FuzzDriver", .product(name: "Pickle", package: "SwiftDetectron")],
                          swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(name: "FuzzConfig", dependencies: ["FuzzDriver", .product(name: "Engine", package: "SwiftDetectron")],
                          swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
