import Foundation
import LocalProcesses
import Testing

extension EndToEnd {
    /// smlt-bench aggregate end to end at a tiny size: every method runs, checks its aggregates bit
    /// for bit (the benchmark fails otherwise), reports the same fields, and leaves nothing behind.
    /// No timing is asserted.
    @Suite struct BenchSmokeTests {
        @Test func aggregateComparesThreeMethodsOnTinyGradients() throws {
            let run = try runBench([
                "aggregate", "--workers", "3", "--params", "5000", "--shards", "2", "--steps", "3", "--warmup", "1",
                "--chunk-elements", "1000", "--compare", "--json",
            ])
            #expect(run.status.succeeded, "\(run.err)")
            let rows = run.rows
            #expect(rows.compactMap { $0["method"] as? String } == ["smlt", "redis-limit", "scatter-reduce"])
            for row in rows {
                for key in [
                    "workers", "params", "shards", "codec", "step_seconds_median", "gradient_gbps",
                    "wire_bytes_per_step",
                ] {
                    #expect(row[key] != nil, "\(row["method"] ?? "?") lacks \(key)")
                }
                #expect(row["workers"] as? Int == 3)
                #expect((row["gradient_gbps"] as? Double ?? 0) > 0)
            }
            // SMLT and scatter-reduce checked every element of every step (4 steps x 5000).
            #expect(rows.first?["checked_elements"] as? Int == 20_000)
            #expect(rows.last?["checked_elements"] as? Int == 20_000)
            #expect(benchWorkers().isEmpty)
        }

        /// `--link-rate` as root: the workers and the shard each in a network namespace behind a
        /// 100mbit link; the run completes, every row records the rate, and none of the run's
        /// namespaces (nor, with them, its links) is left afterwards.
        @Test(.enabled(if: NetworkNamespace.isPermitted, "--link-rate needs root for network namespaces and tc"))
        func aggregateBehindRateLimitedLinksLeavesNoNamespace() throws {
            let run = try runBench([
                "aggregate", "--workers", "2", "--params", "4000", "--shards", "1", "--steps", "2", "--warmup", "1",
                "--chunk-elements", "1000", "--compare", "--link-rate", "100mbit", "--json",
            ])
            #expect(run.status.succeeded, "\(run.err)")
            let rows = run.rows
            #expect(rows.compactMap { $0["method"] as? String } == ["smlt", "redis-limit", "scatter-reduce"])
            for row in rows {
                #expect(row["link_rate"] as? String == "100mbit")
                #expect(row["link_rate_bits_per_second"] as? Int == 100_000_000)
                #expect((row["gradient_gbps"] as? Double ?? 0) > 0)
            }
            // The run's namespaces are named smltnet-PID-…, after the process that made them.
            let prefix = "\(RateLimitedNetwork.Layout.namePrefix)\(run.pid)-"
            #expect(NetworkNamespace.list().filter { $0.hasPrefix(prefix) } == [])
            #expect(benchWorkers().isEmpty)
            #expect(processes(containing: "--network-prefix \(prefix)").isEmpty)
        }

        /// The sweep with link rate as a dimension: one aggregate process per cell, a CSV row per
        /// cell with its rate, and no namespace left.
        @Test(.enabled(if: NetworkNamespace.isPermitted, "--link-rates needs root for network namespaces and tc"))
        func sweepOverLinkRatesRecordsEachRate() throws {
            let run = try runBench { dir in
                [
                    "sweep", "--workers", "2", "--shards", "1", "--codecs", "raw", "--params", "4000", "--steps", "1",
                    "--warmup", "1", "--chunk-elements", "1000", "--smlt-only", "--link-rates", "loopback,100mbit",
                    "--csv", "\(dir)/sweep.csv", "--chart", "\(dir)/sweep.svg",
                ]
            }
            #expect(run.status.succeeded, "\(run.err)")
            let lines = String(decoding: run.files["sweep.csv"] ?? Data(), as: UTF8.self)
                .split(whereSeparator: \.isNewline)
            let column = lines.first?.split(separator: ",").firstIndex(of: "link_rate")
            #expect(column != nil)
            let rates = lines.dropFirst().map {
                $0.split(separator: ",", omittingEmptySubsequences: false)[column ?? 0]
            }
            #expect(rates == ["loopback", "100mbit"])
            let svg = String(decoding: run.files["sweep.svg"] ?? Data(), as: UTF8.self)
            #expect(svg.contains("100mbit, K=1 shards"))
            // Each cell's namespaces are named after its own process, gone by now: any left over
            // would be stale.
            #expect(RateLimitedNetwork.removeStale() == [], "namespaces left behind")
        }

        /// Gradient encodings in one invocation: SMLT runs with each, the lossy ones (bf16, top-k)
        /// checked bit for bit against the sums of the decoded pushes, every row checks elements,
        /// and each row says its speed relative to the raw row.
        @Test func aggregateMeasuresEveryGradientEncodingInOneRun() throws {
            let run = try runBench([
                "aggregate", "--workers", "3", "--params", "5000", "--shards", "2", "--steps", "3", "--warmup", "1",
                "--chunk-elements", "1000", "--codec", "raw,bf16-shuffle-lz4,topk:0.1", "--json",
            ])
            #expect(run.status.succeeded, "\(run.err)")
            let rows = run.rows
            #expect(rows.compactMap { $0["codec"] as? String } == ["raw", "bf16-shuffle-lz4", "topk:0.1"])
            for row in rows {
                #expect(row["method"] as? String == "smlt")
                #expect((row["checked_elements"] as? Int ?? 0) > 0, "\(row["codec"] ?? "?") checked nothing")
                #expect((row["vs_raw"] as? Double ?? 0) > 0, "\(row["codec"] ?? "?") lacks vs_raw")
            }
            #expect(rows.first?["vs_raw"] as? Double == 1)
            // bf16 halves the bytes before LZ4; top-k 0.1 sends a tenth of the pairs.
            #expect((rows.dropFirst().first?["compression_ratio"] as? Double ?? 0) > 1.5)
            #expect((rows.last?["compression_ratio"] as? Double ?? 0) > 2)
            #expect(processes(containing: "aggregate-worker").isEmpty)
        }

        /// An encoding that is not one is refused before anything starts, naming the flag.
        @Test func aggregateRefusesABadEncoding() throws {
            for bad in ["raw,topk:2", "bf32-lz4"] {
                let run = try runBench(["aggregate", "--codec", bad], timeout: .seconds(30))
                #expect(!run.status.succeeded)
                #expect(run.err.contains("--codec: "), "\(run.err)")
            }
        }

        /// `checksum` times every CRC-32C path this CPU has, warm and cold, next to memcpy, and
        /// refuses a size that is not one.
        @Test func checksumTimesEveryPathAgainstMemcpy() throws {
            let run = try runBench(
                ["checksum", "--sizes", "4096,65536", "--repeats", "3", "--cold-mi-b", "4", "--json"],
                timeout: .seconds(60))
            #expect(run.status.succeeded, "\(run.err)")
            let rows = run.rows
            let methods = Set(rows.compactMap { $0["method"] as? String })
            #expect(methods.isSuperset(of: ["memcpy", "table", "ctk_crc32c"]), "\(methods)")
            // 2 sizes x warm and cold, each with memcpy and every path.
            #expect(rows.count == 4 * methods.count)
            for row in rows {
                #expect((row["gbps"] as? Double ?? 0) > 0, "\(row)")
                if row["method"] as? String == "memcpy" { #expect(row["vs_memcpy"] as? Double == 1) }
            }
            let bad = try runBench(["checksum", "--sizes", "4096,x"], timeout: .seconds(30))
            #expect(!bad.status.succeeded)
            #expect(bad.err.contains("size 'x' is not a positive integer"), "\(bad.err)")
        }

        /// A rate that is not one is refused before anything starts, naming the flag.
        @Test func aggregateRefusesABadLinkRate() throws {
            let run = try runBench(["aggregate", "--link-rate", "1gb"], timeout: .seconds(30))
            #expect(!run.status.succeeded)
            #expect(run.err.contains("--link-rate: '1gb' is not a rate"), "\(run.err)")
        }

        @Test func linkRatesParseAsTcWritesThem() throws {
            #expect(try LinkRate(parsing: "100mbit").bitsPerSecond == 100_000_000)
            #expect(try LinkRate(parsing: "1gbit").bitsPerSecond == 1_000_000_000)
            #expect(try LinkRate(parsing: "2.5Gbit").bitsPerSecond == 2_500_000_000)
            #expect(try LinkRate(parsing: "2.5gbit").text == "2.5gbit")
            for bad in ["", "1gb", "gbit", "-1gbit", "0mbit", "nanmbit", "1 gbit", "10kbit", "100tbit"] {
                #expect(throws: NetworkError.self, "\(bad)") { try LinkRate(parsing: bad, flag: "--x") }
            }
        }
    }
}

/// What one run of smlt-bench left: its exit status and pid, what it printed, and the files it
/// wrote into its scratch directory.
struct BenchRun {
    let status: LocalProcesses.ExitStatus
    let pid: Int32
    let out: Data
    let err: String
    /// The scratch directory's files other than the run's output, by name.
    let files: [String: Data]
    /// The rows of `--json` output.
    var rows: [[String: Any]] { (try? JSONSerialization.jsonObject(with: out)) as? [[String: Any]] ?? [] }
}

/// Runs smlt-bench with `arguments` in a scratch directory, which is removed afterwards, and waits
/// up to `timeout` for it (terminating it then).
func runBench(_ arguments: [String], timeout: Duration = .seconds(120)) throws -> BenchRun {
    try runBench(timeout: timeout) { _ in arguments }
}

/// The same with the arguments made from the scratch directory's path (for files it should write).
func runBench(timeout: Duration = .seconds(120), _ arguments: (String) -> [String]) throws -> BenchRun {
    let dir = NSTemporaryDirectory() + "smlt-bench-test-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let p = try ChildProcess(
        benchBinary(), arguments: arguments(dir), stdout: .file("\(dir)/out"), stderr: .file("\(dir)/err"))
    let status = p.wait(timeout: timeout) ?? p.terminate()
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    var files: [String: Data] = [:]
    for name in names where name != "out" && name != "err" {
        files[name] = FileManager.default.contents(atPath: "\(dir)/\(name)")
    }
    return BenchRun(
        status: status, pid: p.pid, out: FileManager.default.contents(atPath: "\(dir)/out") ?? Data(),
        err: (try? String(contentsOfFile: "\(dir)/err", encoding: .utf8)) ?? "", files: files)
}

/// Worker processes of this build's smlt-bench still running (a benchmark run elsewhere on the
/// machine is not this test's).
func benchWorkers() -> [String] {
    let exe = URL(fileURLWithPath: benchBinary()).resolvingSymlinksInPath().path
    return processes(containing: "\(exe) aggregate-worker")
}

/// The smlt-bench binary built next to smlt.
func benchBinary() -> String {
    URL(fileURLWithPath: smltBinary()).deletingLastPathComponent().appendingPathComponent("smlt-bench").path
}
