import CLinuxShim
import Foundation

/// glibc malloc settings for programs that allocate and free blocks of megabytes at a high rate,
/// as a data loader does with its decoded images (about 1 MB each) and batches (about 8 MB).
///
/// By default glibc maps blocks above a threshold with `mmap` (128 KiB, raised to the largest
/// such block freed so far) and gives the free top of a heap back to the kernel once it passes
/// twice that. Which of the loader's blocks land where then depends on the order of frees across
/// threads, and in the unlucky orders every image and batch is mapped or trimmed and faulted back
/// in page by page, each page zeroed by the kernel: on this machine the same 2-thread-worker run
/// took 0.1 s or 1.5 s of system time, 1,200 or 500 images/s. Fixing both thresholds (blocks
/// under 32 MiB from the heaps, heaps trimmed past 128 MiB free) keeps the freed blocks for the
/// next image.
///
/// A process-wide setting, so it is the executable's choice: `detectron` applies it first thing
/// in `main`; programs that use the DataLoading library on their own can do the same. glibc's own
/// environment settings (`GLIBC_TUNABLES=glibc.malloc.…`, `MALLOC_MMAP_THRESHOLD_`,
/// `MALLOC_TRIM_THRESHOLD_`) win: with any of them set, nothing is changed.
public enum MallocTuning {
    public enum Outcome: Equatable, Sendable {
        case applied
        /// The environment already configures malloc (the variable named).
        case leftToEnvironment(String)
        /// mallopt refused (AddressSanitizer's allocator, standing in for glibc's, does).
        case unavailable
    }

    public static let mmapThreshold = 32 << 20
    public static let trimThreshold = 128 << 20

    @discardableResult
    public static func keepLargeBlocks(environment: [String: String] = ProcessInfo.processInfo.environment) -> Outcome {
        if let t = environment["GLIBC_TUNABLES"], t.contains("glibc.malloc.") { return .leftToEnvironment("GLIBC_TUNABLES") }
        for key in ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"] where environment[key] != nil {
            return .leftToEnvironment(key)
        }
        return sd_malloc_set_thresholds(Int32(mmapThreshold), Int32(trimThreshold)) == 1 ? .applied : .unavailable
    }
}
