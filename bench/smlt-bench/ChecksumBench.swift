import ArgumentParser
import CTensorKernels
import Foundation

/// CRC-32C speed of every path `ctk_crc32c` can take on this CPU, on data in cache and on data
/// that is not, against `memcpy` of the same bytes in the same invocation.
struct ChecksumBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checksum",
        abstract: "CRC-32C GB/s of each path this CPU has, warm and cold, against memcpy of the same bytes.")

    @Option(help: "Comma-separated buffer sizes in bytes.") var sizes = "65536,1048576"
    @Option(help: "Measurements per path and size (the median is reported).") var repeats = 31
    @Option(help: "MiB the cold measurements walk through, so that each finds its bytes out of cache.")
    var coldMiB = 512
    @Flag(help: "Print JSON.") var json = false

    struct Row: Codable {
        var bytes: Int
        /// `warm`: the same buffer again (in cache); `cold`: a buffer last touched `coldMiB` ago.
        var data: String
        var method: String
        var gbps: Double
        /// This method's GB/s over memcpy's on the same size and data.
        var vsMemcpy: Double
        enum CodingKeys: String, CodingKey {
            case bytes, data, method, gbps
            case vsMemcpy = "vs_memcpy"
        }
    }

    static let paths: [(String, Int32)] = [
        ("table", Int32(CTK_CRC_TABLE)), ("chains", Int32(CTK_CRC_CHAINS)), ("fold128", Int32(CTK_CRC_FOLD128)),
        ("fold256", Int32(CTK_CRC_FOLD256)), ("fold256+chains", Int32(CTK_CRC_FOLD256_CHAINS)),
        ("fold512", Int32(CTK_CRC_FOLD512)), ("ctk_crc32c", Int32(CTK_CRC_AUTO)),
    ]

    func run() throws {
        let sizeList = try sizes.split(separator: ",").map { text -> Int in
            guard let n = Int(text), n > 0 else { throw ValidationError("size '\(text)' is not a positive integer") }
            return n
        }
        guard repeats > 0, coldMiB > 0 else { throw ValidationError("--repeats and --cold-mi-b must be positive") }
        let methods = Self.paths.filter { ctk_crc32c_path_available($0.1) == 1 }
        var rows: [Row] = []
        for size in sizeList {
            guard size * 2 <= coldMiB << 20 else { throw ValidationError("size \(size) needs a larger --cold-mi-b") }
            for data in ["warm", "cold"] {
                let span = data == "warm" ? size : (coldMiB << 20) / size * size
                let source = UnsafeMutableRawBufferPointer.allocate(byteCount: span, alignment: 64)
                let target = UnsafeMutableRawBufferPointer.allocate(byteCount: span, alignment: 64)
                defer {
                    source.deallocate()
                    target.deallocate()
                }
                var state: UInt64 = 0x9E37_79B9_7F4A_7C15
                for i in stride(from: 0, to: span, by: 8) {
                    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    source.storeBytes(of: state, toByteOffset: i, as: UInt64.self)
                }
                target.initializeMemory(as: UInt8.self, repeating: 0)
                let slices = span / size
                // Slice r·(methods+1)+m for measurement r of method m: a cold slice is touched
                // again only after the whole span has been walked.
                var next = 0
                func slice() -> Int {
                    defer { next += 1 }
                    return (next % slices) * size
                }
                var times = [[Double]](repeating: [], count: methods.count + 1)
                var check: [UInt32] = []
                for _ in 0..<repeats {
                    let at = slice()
                    times[0].append(
                        timed { memcpy(target.baseAddress! + at, source.baseAddress! + at, size) })
                    check.removeAll(keepingCapacity: true)
                    for (m, method) in methods.enumerated() {
                        let at = slice()
                        var crc: UInt32 = 0
                        times[m + 1].append(
                            timed { _ = ctk_crc32c_with(&crc, source.baseAddress! + at, size, method.1) })
                        // Every path must agree on the same bytes (checked outside the timing).
                        var reference: UInt32 = 0
                        _ = ctk_crc32c_with(&reference, source.baseAddress! + at, size, Int32(CTK_CRC_TABLE))
                        precondition(crc == reference, "\(method.0) gave \(crc), the table \(reference)")
                    }
                }
                let medians = times.map { $0.sorted()[$0.count / 2] }
                let memcpyGBps = Double(size) / medians[0] / 1e9
                rows.append(Row(bytes: size, data: data, method: "memcpy", gbps: memcpyGBps, vsMemcpy: 1))
                for (m, method) in methods.enumerated() {
                    let gbps = Double(size) / medians[m + 1] / 1e9
                    rows.append(Row(bytes: size, data: data, method: method.0, gbps: gbps, vsMemcpy: gbps / memcpyGBps))
                }
            }
        }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(rows), as: UTF8.self))
            return
        }
        print("CRC-32C on one core, median of \(repeats); cold = bytes last touched \(coldMiB) MiB ago")
        print("bytes     data  method          GB/s   vs memcpy")
        for r in rows {
            print(
                String(r.bytes).padding(toLength: 10, withPad: " ", startingAt: 0)
                    + r.data.padding(toLength: 6, withPad: " ", startingAt: 0)
                    + r.method.padding(toLength: 15, withPad: " ", startingAt: 0)
                    + String(format: "%5.1f   %5.2fx", r.gbps, r.vsMemcpy))
        }
    }

    private func timed(_ body: () -> Void) -> Double {
        let start = monotonicSeconds()
        body()
        return monotonicSeconds() - start
    }
}
