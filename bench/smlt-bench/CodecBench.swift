import ArgumentParser
import CLZ4
import CTensorKernels
import Foundation
import LocalProcesses
import RedisClient
import TensorBlob
import Workloads

/// Encode/decode speed and ratio of each blob dtype and codec on gradient-like data, with the
/// `lz4` command-line tool's own benchmark (`lz4 -b1`) on the same bytes as the baseline.
struct CodecBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codec",
        abstract: "Blob dtype and codec GB/s and ratio on f32 gradients, against the lz4 CLI on the same bytes.")

    @Option(help: "Elements per blob.") var elements = 1 << 20
    @Option(help: "Encode/decode repetitions per measurement (the median is reported).") var repeats = 20
    @Option(help: "Comma-separated dtypes.") var dtypes = "f32,bf16,f16"
    @Option(
        help: "Comma-separated data sets (gaussian, laplace, known, bf16-truncated, half-zeros, sparse, bf16-residual)."
    )
    var data = "gaussian,laplace,known,bf16-truncated,half-zeros,sparse"
    @Option(
        help: ArgumentHelp(
            "Instead of the codec table: LZ4 acceleration values to time on the shuffled bytes of each dtype.",
            valueName: "a,b,..."))
    var accelerations: String?
    @Option(help: "Comma-separated top-k fractions, each measured as sparse-lz4 blobs (empty: none).")
    var fractions = "0.01,0.1"
    @Flag(help: "Print JSON.") var json = false

    struct Row: Codable {
        var data: String
        var dtype: String
        var method: String
        var acceleration: Int?
        /// f32 bytes / stored payload bytes.
        var ratio: Double
        /// f32 input bytes per second, in GB/s, on one core.
        var encodeGBps: Double
        var decodeGBps: Double
        enum CodingKeys: String, CodingKey {
            case data, dtype, method, acceleration, ratio
            case encodeGBps = "encode_gbps"
            case decodeGBps = "decode_gbps"
        }
    }

    static let allData = ["gaussian", "laplace", "known", "bf16-truncated", "half-zeros", "sparse", "bf16-residual"]

    /// The data sets, by name: dense Gaussian and Laplace (heavy-tailed) gradients of scale
    /// 0.01, the aggregation benchmark's known gradient (integers times 2^-24), Gaussian values
    /// truncated to bf16 but stored as f32, Gaussian values with half or 99% zeros, and the
    /// error-feedback residual of a bf16 push of the Gaussian gradient (`v - round_bf16(v)`, what
    /// a worker stores as `residual-W-P`).
    func dataset(_ name: String) throws -> [Float] {
        var rng = SplitMix(seed: 42)
        let dense = (0..<elements).map { _ in rng.normal() * 0.01 }
        switch name {
        case "gaussian": return dense
        case "laplace":
            return (0..<elements).map { _ in
                let u = max(rng.uniform(), 1e-7)
                return (rng.next() & 1 == 0 ? 0.01 : -0.01) * -log(u)
            }
        case "known": return KnownGradient(workers: 8, params: elements).base(worker: 0)
        case "bf16-truncated": return dense.map { Float(bitPattern: $0.bitPattern & 0xFFFF_0000) }
        case "half-zeros": return dense.map { rng.next() % 2 == 0 ? 0 : $0 }
        case "sparse": return dense.map { rng.next() % 100 == 0 ? $0 : 0 }
        case "bf16-residual":
            var sent = [Float](repeating: 0, count: elements)
            var residual = [Float](repeating: 0, count: elements)
            dense.withUnsafeBufferPointer { g in
                sent.withUnsafeMutableBufferPointer { s in
                    residual.withUnsafeMutableBufferPointer {
                        DType.bf16.feedback(g, residual: nil, sent: s, remainder: $0)
                    }
                }
            }
            return residual
        default: throw ValidationError("unknown data set '\(name)' (\(Self.allData.joined(separator: ", ")))")
        }
    }

    func parsedDTypes() throws -> [DType] {
        try dtypes.split(separator: ",").map {
            guard let d = DType(name: String($0)) else {
                throw ValidationError("unknown dtype '\($0)' (f32, f16, bf16)")
            }
            return d
        }
    }

    /// The median of `repeats` timings of `body`, in seconds.
    func median(_ body: () throws -> Void) rethrows -> Double {
        var times: [Double] = []
        for _ in 0..<repeats {
            let start = ContinuousClock.now
            try body()
            times.append((ContinuousClock.now - start).seconds)
        }
        return times.sorted()[times.count / 2]
    }

    func run() throws {
        guard elements > 0, repeats > 0 else { throw ValidationError("--elements and --repeats must be positive") }
        let names = data.split(separator: ",").map(String.init)
        // As in every SMLT process that has a Redis connection: megabyte buffers stay in the heap
        // instead of being mapped and page-faulted afresh on each allocation.
        RedisConnection.tuneMalloc()
        let rows = try accelerations.map { try accelerationRows(names, $0) } ?? codecRows(names)
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(rows), as: UTF8.self))
            return
        }
        print(
            "\(elements) f32 elements (\(elements * 4 / 1024) KiB) per blob; ratio = f32 bytes / stored payload; "
                + "GB/s = f32 bytes per second on one core (median of \(repeats))")
        print("data            dtype method                        accel  ratio   encode GB/s  decode GB/s")
        for r in rows {
            print(
                r.data.padding(toLength: 16, withPad: " ", startingAt: 0)
                    + r.dtype.padding(toLength: 6, withPad: " ", startingAt: 0)
                    + r.method.padding(toLength: 30, withPad: " ", startingAt: 0)
                    + (r.acceleration.map { String($0) } ?? "-").padding(toLength: 5, withPad: " ", startingAt: 0)
                    + String(format: "%6.2fx  %11.2f  %11.2f", r.ratio, r.encodeGBps, r.decodeGBps))
        }
    }

    /// Every dtype × codec through `TensorBlob` (conversion, shuffle, LZ4, CRC-32C), and the lz4
    /// CLI on the same bytes LZ4 sees: the f32 values, and for 2-byte dtypes the shuffled elements.
    func codecRows(_ names: [String]) throws -> [Row] {
        var rows: [Row] = []
        for name in names {
            let values = try dataset(name)
            let f32Bytes = Double(values.count * 4)
            for dtype in try parsedDTypes() {
                var expected = [Float](repeating: 0, count: values.count)
                values.withUnsafeBufferPointer { v in
                    expected.withUnsafeMutableBufferPointer { dtype.round(v, into: $0) }
                }
                for codec in BlobCodec.allCases {
                    var blob: [UInt8] = []
                    let enc = median {
                        blob = TensorBlob.encode(values, dtype: dtype, codec: codec, step: 0, producer: 0)
                    }
                    var out = [Float](repeating: 0, count: values.count)
                    let dec = try median {
                        try blob.withUnsafeBytes { b in
                            try out.withUnsafeMutableBufferPointer { _ = try TensorBlob.decode(b, into: $0) }
                        }
                    }
                    precondition(out.map(\.bitPattern) == expected.map(\.bitPattern), "round trip failed")
                    let stored = blob[6] == codec.rawValue ? "" : " (stored raw)"
                    rows.append(
                        Row(
                            data: name, dtype: "\(dtype)", method: "smlt \(codec)\(stored)",
                            acceleration: codec == .raw ? nil : Int(dtype.lz4Acceleration(for: codec)),
                            ratio: f32Bytes / Double(blob.count - BlobHeader.size), encodeGBps: f32Bytes / enc / 1e9,
                            decodeGBps: f32Bytes / dec / 1e9))
                }
                rows += try topKRows(name, values, dtype)
                // The CLI on the bytes our LZ4 stage compresses for shuffle-lz4 (2-byte dtypes)
                // or lz4 (f32), at acceleration 1 (`-1`): LZ4's own speed on them.
                let lz4Input = dtype == .f32 ? bytes(values) : shuffled(values, dtype)
                if let cli = try lz4CLI(lz4Input) {
                    rows.append(
                        Row(
                            data: name, dtype: "\(dtype)",
                            method: dtype == .f32 ? "lz4 -b1 CLI" : "lz4 -b1 CLI, shuffled",
                            acceleration: 1, ratio: f32Bytes / (Double(lz4Input.count) / cli.ratio),
                            encodeGBps: cli.compress * f32Bytes / Double(lz4Input.count),
                            decodeGBps: cli.decompress * f32Bytes / Double(lz4Input.count)))
                }
            }
        }
        return rows
    }

    /// Top-k gradients at each of `--fractions`, two rows each. `smlt topk:F`: the selection and
    /// the sparse-lz4 encoding, and decoding to the dense vector. `smlt topk:F pairs`: the
    /// encoding of already selected pairs, and decoding the pairs and adding them into a dense
    /// sum (the servers' path) instead. GB/s are of the dense f32 bytes, as everywhere.
    func topKRows(_ name: String, _ values: [Float], _ dtype: DType) throws -> [Row] {
        let f32Bytes = Double(values.count * 4)
        var rows: [Row] = []
        for text in fractions.split(separator: ",") {
            guard let fraction = Double(text) else { throw ValidationError("fraction '\(text)' is not a number") }
            let selected = try SparseGradient.topK(values, fraction: fraction)
            var blob: [UInt8] = []
            let enc = try median {
                blob = try TensorBlob.encodeTopK(values, fraction: fraction, dtype: dtype, step: 0, producer: 0)
            }
            let encPairs = median { blob = TensorBlob.encode(selected, dtype: dtype, step: 0, producer: 0) }
            var out = [Float](repeating: 0, count: values.count)
            let dec = try median {
                try blob.withUnsafeBytes { b in
                    try out.withUnsafeMutableBufferPointer { _ = try TensorBlob.decode(b, into: $0) }
                }
            }
            var expected = [Float](repeating: 0, count: values.count)
            for (i, v) in zip(selected.indices, selected.values) {
                expected[Int(i)] = [v].withUnsafeBufferPointer { src in
                    var r: Float = 0
                    withUnsafeMutablePointer(to: &r) {
                        dtype.round(src, into: UnsafeMutableBufferPointer(start: $0, count: 1))
                    }
                    return r
                }
            }
            precondition(out.map(\.bitPattern) == expected.map(\.bitPattern), "top-k round trip failed")
            let scratch = DecodeScratch()
            var sum = [Float](repeating: 0, count: values.count)
            let add = try median {
                try blob.withUnsafeBytes { b in
                    let (_, pairs) = try TensorBlob.decodeSparse(b, scratch: scratch)
                    sum.withUnsafeMutableBufferPointer { _ = pairs.add(into: $0) }
                }
            }
            let stored = blob[6] == BlobCodec.sparseLZ4.rawValue ? "" : " (stored raw)"
            let ratio = f32Bytes / Double(blob.count - BlobHeader.size)
            rows.append(
                Row(
                    data: name, dtype: "\(dtype)", method: "smlt topk:\(fraction)\(stored)", acceleration: 1,
                    ratio: ratio, encodeGBps: f32Bytes / enc / 1e9, decodeGBps: f32Bytes / dec / 1e9))
            rows.append(
                Row(
                    data: name, dtype: "\(dtype)", method: "smlt topk:\(fraction) pairs, add\(stored)", acceleration: 1,
                    ratio: ratio, encodeGBps: f32Bytes / encPairs / 1e9, decodeGBps: f32Bytes / add / 1e9))
        }
        return rows
    }

    /// LZ4 alone (`LZ4_compress_fast`, `LZ4_decompress_safe`) at each acceleration on the
    /// shuffled element bytes of each dtype: what the writer's acceleration is chosen from.
    func accelerationRows(_ names: [String], _ list: String) throws -> [Row] {
        let values = try list.split(separator: ",").map {
            guard let a = Int32($0), a >= 1 else {
                throw ValidationError("acceleration '\($0)' is not a positive integer")
            }
            return a
        }
        var rows: [Row] = []
        for name in names {
            let input = try dataset(name)
            let f32Bytes = Double(input.count * 4)
            for dtype in try parsedDTypes() {
                let src = shuffled(input, dtype)
                let bound = Int(clz4_compress_bound(Int32(src.count)))
                var out = [UInt8](repeating: 0, count: bound)
                var back = [UInt8](repeating: 0, count: src.count)
                for a in values {
                    var n: Int32 = 0
                    let enc = median {
                        n = src.withUnsafeBytes { s in
                            out.withUnsafeMutableBytes {
                                clz4_compress_fast(s.baseAddress, $0.baseAddress, Int32(s.count), Int32(bound), a)
                            }
                        }
                    }
                    let dec = median {
                        _ = out.withUnsafeBytes { o in
                            back.withUnsafeMutableBytes {
                                clz4_decompress_safe(o.baseAddress, $0.baseAddress, n, Int32($0.count))
                            }
                        }
                    }
                    precondition(back == src, "LZ4 round trip failed")
                    rows.append(
                        Row(
                            data: name, dtype: "\(dtype)", method: "LZ4 on shuffled bytes", acceleration: Int(a),
                            ratio: f32Bytes / Double(n), encodeGBps: f32Bytes / enc / 1e9,
                            decodeGBps: f32Bytes / dec / 1e9))
                }
            }
        }
        return rows
    }

    func bytes(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

    /// The element bytes of `values` in `dtype`, byte-shuffled by its width.
    func shuffled(_ values: [Float], _ dtype: DType) -> [UInt8] {
        var elements = [UInt8](repeating: 0, count: values.count * dtype.byteWidth)
        if dtype == .f32 {
            elements = bytes(values)
        } else {
            values.withUnsafeBufferPointer { v in
                elements.withUnsafeMutableBytes {
                    let out = $0.baseAddress!.assumingMemoryBound(to: UInt16.self)
                    if dtype == .bf16 {
                        ctk_f32_to_bf16(v.baseAddress, out, v.count)
                    } else {
                        ctk_f32_to_f16(v.baseAddress, out, v.count)
                    }
                }
            }
        }
        var result = elements
        elements.withUnsafeBytes { s in
            result.withUnsafeMutableBytes {
                ctk_shuffle(s.baseAddress, $0.baseAddress, values.count, dtype.byteWidth)
            }
        }
        return result
    }

    /// Runs `lz4 -b1` on `bytes`; returns its ratio and compress and decompress GB/s of `bytes`.
    func lz4CLI(_ bytes: [UInt8]) throws -> (ratio: Double, compress: Double, decompress: Double)? {
        let path = NSTemporaryDirectory() + "smlt-codec-\(getpid()).bin"
        let out = path + ".txt"
        defer {
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: out)
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
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
