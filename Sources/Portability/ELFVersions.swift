import Foundation

/// The symbol versions an ELF executable needs from its shared libraries (its `.gnu.version_r`
/// section, what `objdump -T` shows as `GLIBC_2.28`): the doctor compares the newest glibc
/// version this binary needs with the host's.
public enum ELFVersions {
    /// A version requirement: the library (`libc.so.6`) and the version name (`GLIBC_2.28`).
    public struct Need: Sendable, Hashable {
        public var library: String
        public var version: String
    }

    /// The version requirements of the ELF64 little-endian file at `path` (this executable by
    /// default); nil when it is not such a file or has no requirements section.
    public static func needs(of path: String = "/proc/self/exe") -> [Need]? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return data.withUnsafeBytes { raw -> [Need]? in
            func u16(_ o: Int) -> Int? { o >= 0 && o + 2 <= raw.count ? Int(raw.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian) : nil }
            func u32(_ o: Int) -> Int? { o >= 0 && o + 4 <= raw.count ? Int(raw.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian) : nil }
            func u64(_ o: Int) -> Int? { o >= 0 && o + 8 <= raw.count ? Int(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian) : nil }
            func string(_ o: Int) -> String? {
                guard o >= 0, o < raw.count else { return nil }
                let bytes = raw[o...].prefix { $0 != 0 }
                return String(decoding: bytes, as: UTF8.self)
            }
            // ELF64 (class 2), little-endian (data 1).
            guard raw.count > 64, raw[0] == 0x7F, raw[1] == 0x45, raw[2] == 0x4C, raw[3] == 0x46, raw[4] == 2, raw[5] == 1,
                  let shoff = u64(0x28), let shentsize = u16(0x3A), let shnum = u16(0x3C), shentsize >= 64 else { return nil }
            let sections = (0..<shnum).map { shoff + $0 * shentsize }
            let shtGnuVerneed = 0x6FFF_FFFE
            guard let verneed = sections.first(where: { u32($0 + 4) == shtGnuVerneed }),
                  let offset = u64(verneed + 0x18), let link = u32(verneed + 0x28), link < shnum,
                  let strtab = u64(sections[link] + 0x18) else { return nil }
            var needs: [Need] = []
            var entry = offset
            for _ in 0..<1000 {
                guard let count = u16(entry + 2), let file = u32(entry + 4), let aux = u32(entry + 8), let next = u32(entry + 12),
                      let library = string(strtab + file) else { return nil }
                var a = entry + aux
                for _ in 0..<count {
                    guard let name = u32(a + 8), let anext = u32(a + 12), let version = string(strtab + name) else { return nil }
                    needs.append(Need(library: library, version: version))
                    if anext == 0 { break }
                    a += anext
                }
                if next == 0 { break }
                entry += next
            }
            return needs
        }
    }

    /// The newest `GLIBC_x.y` among `needs`, as "x.y" (nil if none).
    public static func newestGlibc(_ needs: [Need]) -> String? {
        needs.compactMap { n -> [Int]? in
            guard n.version.hasPrefix("GLIBC_") else { return nil }
            let parts = n.version.dropFirst(6).split(separator: ".").compactMap { Int($0) }
            return parts.isEmpty ? nil : parts
        }.max { $0.lexicographicallyPrecedes($1) }?.map(String.init).joined(separator: ".")
    }

    /// Whether glibc version `have` ("2.31") is at least `need` ("2.28").
    public static func glibc(_ have: String, satisfies need: String) -> Bool {
        let h = have.split(separator: ".").compactMap { Int($0) }, n = need.split(separator: ".").compactMap { Int($0) }
        return !h.lexicographicallyPrecedes(n)
    }
}
