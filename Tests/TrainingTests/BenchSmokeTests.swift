import Foundation
import LocalProcesses
import Testing

extension EndToEnd {
    /// smlt-bench aggregate end to end at a tiny size: every method runs, checks its aggregates bit
    /// for bit (the benchmark fails otherwise), reports the same fields, and leaves nothing behind.
    /// No timing is asserted.
    @Suite struct BenchSmokeTests {
        @Test func aggregateComparesThreeMethodsOnTinyGradients() throws {
            let bench = URL(fileURLWithPath: smltBinary()).deletingLastPathComponent().appendingPathComponent(
                "smlt-bench"
            )
            .path
            let dir = NSTemporaryDirectory() + "smlt-bench-test-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let p = try ChildProcess(
                bench,
                arguments: [
                    "aggregate", "--workers", "3", "--params", "5000", "--shards", "2", "--steps", "3", "--warmup", "1",
                    "--chunk-elements", "1000", "--compare", "--json",
                ],
                stdout: .file("\(dir)/out"), stderr: .file("\(dir)/err"))
            let status = p.wait(timeout: .seconds(120)) ?? p.terminate()
            let err = (try? String(contentsOfFile: "\(dir)/err", encoding: .utf8)) ?? ""
            #expect(status.succeeded, "\(err)")
            let data = FileManager.default.contents(atPath: "\(dir)/out") ?? Data()
            let rows = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]] ?? []
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
            let dir = NSTemporaryDirectory() + "smlt-bench-test-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let p = try ChildProcess(
                benchBinary(),
                arguments: [
                    "aggregate", "--workers", "2", "--params", "4000", "--shards", "1", "--steps", "2", "--warmup", "1",
                    "--chunk-elements", "1000", "--compare", "--link-rate", "100mbit", "--json",
                ],
                stdout: .file("\(dir)/out"), stderr: .file("\(dir)/err"))
            let status = p.wait(timeout: .seconds(120)) ?? p.terminate()
            let err = (try? String(contentsOfFile: "\(dir)/err", encoding: .utf8)) ?? ""
            #expect(status.succeeded, "\(err)")
            let data = FileManager.default.contents(atPath: "\(dir)/out") ?? Data()
            let rows = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]] ?? []
            #expect(rows.compactMap { $0["method"] as? String } == ["smlt", "redis-limit", "scatter-reduce"])
            for row in rows {
                #expect(row["link_rate"] as? String == "100mbit")
                #expect(row["link_rate_bits_per_second"] as? Int == 100_000_000)
                #expect((row["gradient_gbps"] as? Double ?? 0) > 0)
            }
            // The run's namespaces are named smltnet-PID-…, after the process that made them.
            let prefix = "\(RateLimitedNetwork.Layout.namePrefix)\(p.pid)-"
            #expect(NetworkNamespace.list().filter { $0.hasPrefix(prefix) } == [])
            #expect(benchWorkers().isEmpty)
            #expect(processes(containing: "--network-prefix \(prefix)").isEmpty)
        }

        /// The sweep with link rate as a dimension: one aggregate process per cell, a CSV row per
        /// cell with its rate, and no namespace left.
        @Test(.enabled(if: NetworkNamespace.isPermitted, "--link-rates needs root for network namespaces and tc"))
        func sweepOverLinkRatesRecordsEachRate() throws {
            let dir = NSTemporaryDirectory() + "smlt-bench-test-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let p = try ChildProcess(
                benchBinary(),
                arguments: [
                    "sweep", "--workers", "2", "--shards", "1", "--codecs", "raw", "--params", "4000", "--steps", "1",
                    "--warmup", "1", "--chunk-elements", "1000", "--smlt-only", "--link-rates", "loopback,100mbit",
                    "--csv", "\(dir)/sweep.csv", "--chart", "\(dir)/sweep.svg",
                ],
                stdout: .discard, stderr: .file("\(dir)/err"))
            let status = p.wait(timeout: .seconds(120)) ?? p.terminate()
            let err = (try? String(contentsOfFile: "\(dir)/err", encoding: .utf8)) ?? ""
            #expect(status.succeeded, "\(err)")
            let lines = ((try? String(contentsOfFile: "\(dir)/sweep.csv", encoding: .utf8)) ?? "")
                .split(whereSeparator: \.isNewline)
            let column = lines.first?.split(separator: ",").firstIndex(of: "link_rate")
            #expect(column != nil)
            let rates = lines.dropFirst().map {
                $0.split(separator: ",", omittingEmptySubsequences: false)[column ?? 0]
            }
            #expect(rates == ["loopback", "100mbit"])
            let svg = (try? String(contentsOfFile: "\(dir)/sweep.svg", encoding: .utf8)) ?? ""
            #expect(svg.contains("100mbit, K=1 shards"))
            // Each cell's namespaces are named after its own process, gone by now: any left over
            // would be stale.
            #expect(RateLimitedNetwork.removeStale() == [], "namespaces left behind")
        }

        /// Gradient encodings in one invocation: SMLT runs with each, the lossy ones (bf16, top-k)
        /// checked bit for bit against the sums of the decoded pushes, every row checks elements,
        /// and each row says its speed relative to the raw row.
        @Test func aggregateMeasuresEveryGradientEncodingInOneRun() throws {
            let dir = NSTemporaryDirectory() + "smlt-bench-test-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let p = try ChildProcess(
                benchBinary(),
                arguments: [
                    "aggregate", "--workers", "3", "--params", "5000", "--shards", "2", "--steps", "3", "--warmup", "1",
                    "--chunk-elements", "1000", "--codec", "raw,bf16-shuffle-lz4,topk:0.1", "--json",
                ],
                stdout: .file("\(dir)/out"), stderr: .file("\(dir)/err"))
            let status = p.wait(timeout: .seconds(120)) ?? p.terminate()
            let err = (try? String(contentsOfFile: "\(dir)/err", encoding: .utf8)) ?? ""
            #expect(status.succeeded, "\(err)")
            let data = FileManager.default.contents(atPath: "\(dir)/out") ?? Data()
            let rows = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]] ?? []
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
            let dir = NSTemporaryDirectory() + "smlt-bench-test-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            for bad in ["raw,topk:2", "bf32-lz4"] {
                let p = try ChildProcess(
                    benchBinary(), arguments: ["aggregate", "--codec", bad], stdout: .discard,
                    stderr: .file("\(dir)/err"))
                let status = p.wait(timeout: .seconds(30)) ?? p.terminate()
                let err = (try? String(contentsOfFile: "\(dir)/err", encoding: .utf8)) ?? ""
                #expect(!status.succeeded)
                #expect(err.contains("--codec: "), "\(err)")
            }
        }

        /// A rate that is not one is refused before anything starts, naming the flag.
        @Test func aggregateRefusesABadLinkRate() throws {
            let dir = NSTemporaryDirectory() + "smlt-bench-test-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let p = try ChildProcess(
                benchBinary(), arguments: ["aggregate", "--link-rate", "1gb"], stdout: .discard,
                stderr: .file("\(dir)/err"))
            let status = p.wait(timeout: .seconds(30)) ?? p.terminate()
            let err = (try? String(contentsOfFile: "\(dir)/err", encoding: .utf8)) ?? ""
            #expect(!status.succeeded)
            #expect(err.contains("--link-rate: '1gb' is not a rate"), "\(err)")
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

/// The smlt-bench binary built next to smlt.
/// Worker processes of this build's smlt-bench still running (a benchmark run elsewhere on the
/// machine is not this test's).
func benchWorkers() -> [String] {
    let exe = URL(fileURLWithPath: benchBinary()).resolvingSymlinksInPath().path
    return processes(containing: "\(exe) aggregate-worker")
}

func benchBinary() -> String {
    URL(fileURLWithPath: smltBinary()).deletingLastPathComponent().appendingPathComponent("smlt-bench").path
}
