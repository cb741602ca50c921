import Portability
import Testing

@Suite("malloc tuning")
struct MallocTuningTests {
    @Test("glibc's own environment settings win; otherwise both thresholds are set")
    func environmentWins() {
        #expect(MallocTuning.keepLargeBlocks(environment: ["GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"]) == .leftToEnvironment("GLIBC_TUNABLES"))
        #expect(MallocTuning.keepLargeBlocks(environment: ["MALLOC_TRIM_THRESHOLD_": "1"]) == .leftToEnvironment("MALLOC_TRIM_THRESHOLD_"))
        #expect(MallocTuning.keepLargeBlocks(environment: ["MALLOC_MMAP_THRESHOLD_": "1"]) == .leftToEnvironment("MALLOC_MMAP_THRESHOLD_"))
        // Tunables for other parts of glibc do not count. AddressSanitizer's allocator, standing
        // in for glibc's, refuses mallopt (ThreadSanitizer's passes it on).
        let expected: MallocTuning.Outcome = Sanitizer.active == "AddressSanitizer" ? .unavailable : .applied
        #expect(MallocTuning.keepLargeBlocks(environment: ["GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"]) == expected)
        #expect(MallocTuning.keepLargeBlocks(environment: [:]) == expected)
    }
}
