import ArgumentParser
import Foundation
import LocalProcesses
import TensorBlob
import Workloads

/// Encode/decode speed and ratio of each blob codec on gradient-like data, with the `lz4`
/// command-line tool's own benchmark (`lz4 -b1`) on the same bytes as the baseline.
struct CodecBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codec",
        abstract: "Blob codec GB/s and ratio on f32 gradients, against the lz4 CLI on the same bytes.")

    @Option(help: "Elements per blob.") var elements = 1 << 20
    @Option(help: "Encode/decode repetitions per measurement.") var repeats = 20
    @Flag(help: "Print JSON.") var json = false

    struct Row: Codable {
        var data: String
        var method: String
        var ratio: Double
        var encodeGBps: Double
        var decodeGBps: Double
        enum CodingKeys: String, CodingKey {
            case data, method, ratio
            case encodeGBps = "encode_gbps"
            case decodeGBps = "decode_gbps"
        }
    }

    func datasets() -> [(String, [Float])] {
        var rng = SplitMix(seed: 42)
        func next() -> UInt64 { rng.next() }
        func gaussian() -> Float { rng.normal() * 0.01 }
        let dense = (0..<elements).map { _ in gaussian() }
        let bf16 = dense.map { Float(bitPattern: $0.bitPattern & 0xFFFF_0000) }
        let half = dense.map { next() % 2 == 0 ? 0 : $0 }
        let sparse = dense.map { next() % 100 == 0 ? $0 : 0 }
        return [("gaussian", dense), ("bf16-truncated", bf16), ("50% zeros", half), ("99% zeros", sparse)]
    }

    func run() throws {
        var rows: [Row] = []
        for (name, values) in datasets() {
            let rawBytes = Double(values.count * 4)
            for codec in BlobCodec.allCases {
                var blob: [UInt8] = []
                var start = ContinuousClock.now
                for _ in 0..<repeats { blob = TensorBlob.encode(values, codec: codec, step: 0, producer: 0) }
                let enc = (ContinuousClock.now - start).seconds / Double(repeats)
                var out = [Float](repeating: 0, count: values.count)
                start = ContinuousClock.now
                for _ in 0..<repeats {
                    try blob.withUnsafeBytes { b in
                        try out.withUnsafeMutableBufferPointer { _ = try TensorBlob.decode(b, into: $0) }
                    }
                }
                let dec = (ContinuousClock.now - start).seconds / Double(repeats)
                precondition(out.map(\.bitPattern) == values.map(\.bitPattern), "round trip failed")
                rows.append(
                    Row(
                        data: name, method: "smlt \(codec)", ratio: rawBytes / Double(blob.count - BlobHeader.size),
                        encodeGBps: rawBytes / enc / 1e9, decodeGBps: rawBytes / dec / 1e9))
            }
            if let cli = try lz4CLI(values) {
                rows.append(
                    Row(data: name, method: "lz4 -b1 (CLI)", ratio: cli.0, encodeGBps: cli.1, decodeGBps: cli.2))
            }
        }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(rows), as: UTF8.self))
            return
        }
        print("\(elements) f32 elements (\(elements * 4 / 1024) KiB) per blob; ratio = raw bytes / stored payload")
        print("data             method              ratio   encode GB/s  decode GB/s")
        for r in rows {
            print(
                r.data.padding(toLength: 17, withPad: " ", startingAt: 0)
                    + r.method.padding(toLength: 18, withPad: " ", startingAt: 0)
                    + String(format: "%6.2fx  %11.2f  %11.2f", r.ratio, r.encodeGBps, r.decodeGBps))
        }
    }

    /// Runs `lz4 -b1` on the raw bytes; returns (ratio, compress GB/s, decompress GB/s).
    func lz4CLI(_ values: [Float]) throws -> (Double, Double, Double)? {
        let path = NSTemporaryDirectory() + "smlt-codec-\(getpid()).bin"
        let out = path + ".txt"
        defer {
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: out)
        }
        try values.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: path)) }
        guard let p = try? ChildProcess("lz4", arguments: ["-b1", "-i1", path], stdout: .file(out), stderr: .file(out))
        else {
            return nil
        }
        _ = p.wait()
        // The last line looks like: " 1#file : 4194304 -> 4179437 (1.004), 5021.3 MB/s , 19000.2 MB/s"
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        guard let line = text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).last(where: { $0.contains("->") })
        else { return nil }
        let numbers = line.split(whereSeparator: { " ,()".contains($0) }).compactMap { Double($0) }
        guard numbers.count >= 3 else { return nil }
        let mb = line.components(separatedBy: "MB/s").dropLast().compactMap {
            $0.split(whereSeparator: { " ,".contains($0) }).last.flatMap { Double($0) }
        }
        guard mb.count == 2 else { return nil }
        return (numbers[0] / numbers[1], mb[0] / 1000, mb[1] / 1000)
    }
}
