import Foundation
import Glibc
@testable import Portability
import Testing

/// Everything that starts processes runs one test at a time, so "no zombies" is exact.
extension Spawning {
    @Suite("Processes and the worker guard", .serialized)
    struct ProcessTests {
        @Test("spawn, wait and collect output; arguments, environment and working directory reach the child")
        func spawnAndWait() throws {
            let r = try probe(["pwd"])
            #expect(r.status == .exited(code: 0))
            #expect(r.output.trimmingCharacters(in: .newlines) == FileManager.default.currentDirectoryPath)

            var config = ProcessConfiguration(executable: probePath, arguments: ["env", "SD_TEST_VALUE"],
                                              environment: ["SD_TEST_VALUE": "42"], workingDirectory: "/tmp")
            config.standardOutput = .pipe
            let child = try Processes.spawn(config)
            let out = String(decoding: child.standardOutput!.readDataToEndOfFile(), as: UTF8.self)
            #expect(child.wait(timeout: 10) == .exited(code: 0))
            #expect(out == "42\n")

            let cwd = try Processes.run(ProcessConfiguration(executable: probePath, arguments: ["pwd"], workingDirectory: "/tmp"))
            #expect(cwd.output == "/tmp\n")
            #expect(zombieChildren().isEmpty)
        }

        @Test("exit codes and signals are reported as typed values with names")
        func exitReasons() throws {
            #expect(try probe(["exit", "3"]).status == .exited(code: 3))
            let killed = try probe(["kill-self", String(SIGKILL)]).status
            #expect(killed == .signaled(.kill, coreDumped: false))
            #expect(killed.description == "was killed by signal SIGKILL")
            #expect(Signal.bus.name == "SIGBUS")
            #expect(zombieChildren().isEmpty)
        }

        @Test("wait with a time-out returns nil while the child runs; terminate sends SIGTERM first")
        func timeoutAndTerminate() throws {
            let child = try Processes.spawn(ProcessConfiguration(executable: probePath, arguments: ["sleep", "30"]))
            let t0 = monotonicSeconds()
            #expect(child.wait(timeout: 0.2) == nil)
            #expect(monotonicSeconds() - t0 < 2)
            #expect(child.isRunning)
            #expect(child.terminate(grace: 5) == .signaled(.term, coreDumped: false))
            #expect(!child.isRunning)
            #expect(zombieChildren().isEmpty)
        }

        @Test("a child that ignores SIGTERM is killed after the grace period")
        func gracefulThenForceful() throws {
            var config = ProcessConfiguration(executable: probePath, arguments: ["ignore-term-sleep", "30"])
            config.standardOutput = .pipe
            let child = try Processes.spawn(config)
            _ = child.standardOutput!.availableData  // "ready": the handler is installed
            let t0 = monotonicSeconds()
            #expect(child.terminate(grace: 0.3) == .signaled(.kill, coreDumped: false))
            let took = monotonicSeconds() - t0
            #expect(took >= 0.3 && took < 5)
            #expect(zombieChildren().isEmpty)
        }

        @Test("Processes.run times out a child that never ends")
        func runTimeout() throws {
            #expect(throws: SpawnError.self) { try probe(["sleep", "30"], timeout: 0.3) }
            #expect(zombieChildren().isEmpty)
        }

        @Test("releasing an unwaited child kills and reaps it")
        func releaseReaps() throws {
            var pid: Int32 = 0
            do {
                let child = try Processes.spawn(ProcessConfiguration(executable: probePath, arguments: ["sleep", "30"]))
                pid = child.pid
            }
            #expect(isDead(pid))
            #expect(zombieChildren().isEmpty)
        }

        @Test("spawn errors are typed and name the cause")
        func spawnErrors() throws {
            #expect(throws: SpawnError.executableNotFound("/nonexistent/program")) {
                try Processes.spawn(ProcessConfiguration(executable: "/nonexistent/program"))
            }
            #expect(throws: SpawnError.executableNotFound("no-such-program-xyz")) {
                try Processes.spawn(ProcessConfiguration(executable: "no-such-program-xyz"))
            }
            let dir = makeTempDirectory("noexec")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let script = dir + "/script.sh"
            _ = FileManager.default.createFile(atPath: script, contents: Data("#!/bin/sh\nexit 0\n".utf8))
            chmod(script, 0o644)
            // Even root gets EACCES from execve for a file with no execute bit at all.
            #expect(throws: SpawnError.permissionDenied(script)) {
                try Processes.spawn(ProcessConfiguration(executable: script))
            }
            let error = SpawnError.permissionDenied(script).description
            #expect(error.contains(script) && error.contains("chmod +x"))
            #expect(throws: SpawnError.badWorkingDirectory("/nonexistent-dir", errno: ENOENT)) {
                try Processes.spawn(ProcessConfiguration(executable: probePath, arguments: ["pwd"], workingDirectory: "/nonexistent-dir"))
            }
            #expect(zombieChildren().isEmpty)
        }

        @Test("ulimit -u reached gives processLimitReached (run as nobody when root: root is exempt)")
        func processLimit() throws {
            let args = (isRoot ? ["--as-nobody"] : []) + ["spawn-program", "0", "/bin/true"]
            // LeakSanitizer needs a thread at exit, which the limit forbids; its check is not the point here.
            let r = try probe(args, environment: ["ASAN_OPTIONS": "detect_leaks=0"])
            #expect(r.status == .exited(code: 8), "\(r.output) \(r.error)")
            #expect(r.output.contains("per-user process limit is reached (ulimit -u is 0)"), "\(r.output)")
        }

        @Test("only the descriptors given are inherited; stdio can be null")
        func descriptors() throws {
            let dir = makeTempDirectory("fds")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let fd = open(dir + "/f", O_CREAT | O_RDWR, 0o600)  // not CLOEXEC on purpose: must not leak
            defer { close(fd) }
            var config = ProcessConfiguration(executable: probePath, arguments: ["fds"])
            config.inheritedDescriptors = [(parent: fd, child: 5)]
            let r = try Processes.run(config)
            // 0-2, the inherited 5, and the descriptor the probe opened to list /proc/self/fd.
            let fds = r.output.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            #expect(fds.filter { $0 > 2 && $0 != 5 }.count <= 1, "leaked descriptors: \(fds)")
            #expect(fds.contains(5))
            #expect(!fds.contains(Int(fd)) || fd == 5 || fds.filter { $0 == Int(fd) }.count <= 1)
        }

        @Test("children die with their parent within 2 s")
        func parentDeath() throws {
            var config = ProcessConfiguration(executable: probePath, arguments: ["spawn-sleeper"])
            config.standardOutput = .pipe
            let parent = try Processes.spawn(config)
            var line = ""
            while !line.contains("\n") {
                let d = parent.standardOutput!.availableData
                if d.isEmpty { break }
                line += String(decoding: d, as: UTF8.self)
            }
            let worker = try #require(Int32(line.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""), "probe said: \(line)")
            #expect(!isDead(worker))
            parent.send(.kill)
            #expect(parent.wait(timeout: 5) == .signaled(.kill, coreDumped: false))
            let t0 = monotonicSeconds()
            while !isDead(worker) && monotonicSeconds() - t0 < 2 { usleep(10_000) }
            #expect(isDead(worker), "worker \(worker) outlived its parent by 2 s")
            #expect(zombieChildren().isEmpty)
        }

        @Test("the worker guard runs the role and exits; the user's main never runs in a worker")
        func workerRole() throws {
            let r = try probe(["spawn-worker"])
            #expect(r.status.isSuccess)
            #expect(r.output.contains("worker role=echo"), "\(r.output)")
            #expect(r.output.contains("args=a b"))
            // The worker printed only its own line: the probe's command switch did not run in it.
            #expect(r.output.components(separatedBy: "worker role=").count == 2)
            #expect(r.output.contains("status exited with code 0"))
        }

        @Test("a worker that tries to start workers is refused")
        func recursiveSpawnRefused() throws {
            let r = try probe(["spawn-worker-role", "recurse"])
            #expect(r.output.contains("refused: a worker process (role 'recurse') tried to start workers of its own"), "\(r.output)")
            #expect(r.output.contains("status exited with code 7"))
        }

        @Test("an executable without the guard fails at once with an error naming the missing call")
        func missingGuard() throws {
            let t0 = monotonicSeconds()
            let r = try probe(["spawn-worker"], environment: ["PROBE_SKIP_GUARD": "1"])
            #expect(r.status == .exited(code: 7))
            #expect(r.output.contains("did not call WorkerGuard.enter(roles:) at the top of main"), "\(r.output)")
            #expect(monotonicSeconds() - t0 < 5)
            // In this process (a test runner that never called the guard) it is refused as well.
            #expect(throws: SpawnError.self) { try WorkerGuard.spawnWorker(role: "echo") }
        }

        @Test("an unknown role is an error, not the user's main")
        func unknownRole() throws {
            var env = ProcessInfo.processInfo.environment
            env["SWIFTDETECTRON_WORKER_ROLE"] = "nope"
            env["SWIFTDETECTRON_WORKER_PARENT"] = String(getpid())
            let r = try Processes.run(ProcessConfiguration(executable: probePath, arguments: ["pwd"], environment: env))
            #expect(r.status == .exited(code: 2))
            #expect(r.error.contains("unknown worker role 'nope' (known roles: echo, read-shm, recurse, sleep)"), "\(r.error)")
            #expect(r.output.isEmpty)
        }
    }
}
