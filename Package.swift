// swift-tools-version: 6.1
// SwiftDetectron: a portable, Swift-native Detectron.
//
// Layering (arrows point down only):
//   C shims (CBLAS + CBLASPreinit, CLibJPEG + CJPEGShim, CLibPNG + CPNGShim, CLinuxShim)
//     → Portability → Storage, BLAS, Imaging → … → DetectronCLI
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "SwiftDetectron",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "detectron", targets: ["DetectronCLI"]),
        .library(name: "Portability", targets: ["Portability"]),
        .library(name: "Storage", targets: ["Storage"]),
        .library(name: "Imaging", targets: ["Imaging"]),
        .library(name: "BLAS", targets: ["BLAS"]),
        .library(name: "Operators", targets: ["Operators"]),
        .library(name: "COCO", targets: ["COCO"]),
        .library(name: "DataLoading", targets: ["DataLoading"]),
        .library(name: "Engine", targets: ["Engine"]),
        .library(name: "Pickle", targets: ["Pickle"]),
        .plugin(name: "DoctorPlugin", targets: ["DoctorPlugin"]),
        .plugin(name: "PortabilityTestPlugin", targets: ["PortabilityTestPlugin"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // The engine logs through swift-log's Logger; the CLI provides the handler that prints.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // `swift package generate-documentation` (ci/docs): the DocC catalogs of the library products.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // MARK: C shims — all C lives here, one target per concern.
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .systemLibrary(
            name: "CLibJPEG",
            pkgConfig: "libjpeg",
            providers: [.apt(["libjpeg-dev"])]
        ),
        .systemLibrary(
            name: "CLibPNG",
            pkgConfig: "libpng",
            providers: [.apt(["libpng-dev"])]
        ),
        // The only C that calls libpng (its longjmp errors become return codes, like CJPEGShim's).
        .target(name: "CPNGShim", dependencies: ["CLibPNG"], cSettings: [.unsafeFlags(["-O2"])]),
        .target(
            name: "CJPEGShim",
            dependencies: ["CLibJPEG"],
            cSettings: [.unsafeFlags(["-O2"])]
        ),
        // Starts OpenBLAS single-threaded (before its constructor runs) so a low process limit
        // cannot kill an executable at load; see the file's comment.
        .target(name: "CBLASPreinit"),
        // C compute kernels that pick AVX-512 at run time: the sgemm BLAS uses in place of OpenBLAS's
        // where the CPU has AVX-512F, and Winograd F(4×4, 3×3)'s transforms; optimised in debug builds too.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        // Open MPI through dlopen: only `mpirun … detectron train` needs it installed.
        .target(name: "CMPIShim"),
        // Stand-ins for the few glibc symbols newer than 2.28 that the static runtimes need; compiled
        // only into ci/release's binary (SD_GLIBC_COMPAT), empty otherwise.
        .target(name: "CGlibcCompat"),
        .target(
            name: "CLinuxShim",
            cSettings: [.define("_GNU_SOURCE")]
        ),

        // MARK: Portability — threads, processes, shared memory, permissions, host facts.
        .target(
            name: "Portability",
            dependencies: [
                "CLinuxShim",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict,
            // shm_open and shm_unlink: in librt before glibc 2.34 (ci/release links against 2.31).
            linkerSettings: [.linkedLibrary("rt")]
        ),

        // MARK: Storage — Context → Tensor → Blob → Workspace.
        .target(name: "Storage", dependencies: ["Portability"], swiftSettings: strict),

        // MARK: BLAS — Swift layer over OpenBLAS.
        .target(name: "BLAS", dependencies: ["CBLAS", "CBLASPreinit", "CKernels"], swiftSettings: strict),

        // MARK: Operators — Caffe2-style ops, gradients, nets and executors.
        .target(name: "Operators", dependencies: ["Storage", "BLAS", "CKernels", "Portability"], swiftSettings: strict),

        // MARK: Imaging — JPEG and PNG decode/encode (libjpeg-turbo and libpng through their shims).
        .target(name: "Imaging", dependencies: ["CJPEGShim", "CPNGShim", "CKernels", "Storage", "Portability"], swiftSettings: strict),

        // MARK: DataLoading — guarded multi-worker loading (threads or processes).
        .target(name: "DataLoading", dependencies: ["Portability", "Imaging", "Storage"], swiftSettings: strict),

        // MARK: Pickle — Python pickles and PyTorch archives, read as data (weights only).
        .target(name: "Pickle", swiftSettings: strict),

        // MARK: COCO — datasets, roidb, box AP evaluation equal to pycocotools.
        .target(name: "COCO", dependencies: ["Portability", "Imaging"], swiftSettings: strict),

        // MARK: Modeling and Engine — Faster R-CNN nets, config, train / test / infer.
        .target(
            name: "Engine",
            dependencies: ["Portability", "Storage", "BLAS", "Operators", "Imaging", "DataLoading", "COCO", "CMPIShim", "Pickle",
                           .product(name: "Yams", package: "Yams"), .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),

        // MARK: CLI
        .executableTarget(
            name: "DetectronCLI",
            dependencies: [
                "CGlibcCompat", "Portability", "Storage", "BLAS", "Imaging", "Operators", "COCO", "DataLoading", "Engine", "Pickle",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // The parent process of the data-loader process-worker tests (guarded, registers test datasets).
        .executableTarget(name: "DataLoaderProbe", dependencies: ["DataLoading"], swiftSettings: strict),

        // A child process for the portability tests (worker roles, parent death, kills, users).
        .executableTarget(name: "PortabilityProbe", dependencies: ["Portability"], swiftSettings: strict),

        // MARK: Plugins
        .plugin(
            name: "DoctorPlugin",
            capability: .command(
                intent: .custom(verb: "doctor", description: "Build and run `detectron doctor`: the host report."),
                permissions: []
            )
        ),
        .plugin(
            name: "PortabilityTestPlugin",
            capability: .command(
                intent: .custom(verb: "portability-test", description: "Run the portability test suite and print its report."),
                permissions: []
            )
        ),

        // MARK: Tests — one target per module.
        .testTarget(name: "PortabilityTests", dependencies: ["Portability", "PortabilityProbe"], swiftSettings: strict),
        .testTarget(name: "StorageTests", dependencies: ["Storage"], swiftSettings: strict),
        .testTarget(name: "BLASTests", dependencies: ["BLAS", "CKernels", "Portability"], swiftSettings: strict),
        .testTarget(name: "OperatorsTests", dependencies: ["Operators", "CKernels", "Portability"], swiftSettings: strict),
        .testTarget(name: "DataLoadingTests", dependencies: ["DataLoading", "DataLoaderProbe"], swiftSettings: strict),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "Operators", "DetectronCLI", .product(name: "Logging", package: "swift-log")], resources: [.copy("Fixtures")], swiftSettings: strict),
        .testTarget(name: "PickleTests", dependencies: ["Pickle"], resources: [.copy("Fixtures")], swiftSettings: strict),
        .testTarget(name: "COCOTests", dependencies: ["COCO"], resources: [.copy("Fixtures")], swiftSettings: strict),
        .testTarget(
            name: "ImagingTests",
            dependencies: ["Imaging"],
            resources: [.copy("Fixtures")],
            swiftSettings: strict
        ),
    ]
)
