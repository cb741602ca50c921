// Compatibility definitions for the release binary built by ci/release against an old glibc
// (Debian 11's 2.31 sysroot) with a newer static libstdc++ and Swift runtime: see
// sd_glibc_compat.c. Nothing to call: the definitions stand in for glibc symbols at link time.
#ifndef SD_GLIBC_COMPAT_H
#define SD_GLIBC_COMPAT_H
#endif
