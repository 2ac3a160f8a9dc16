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
            #expect(processes(containing: "aggregate-worker").isEmpty)
        }
    }
}
