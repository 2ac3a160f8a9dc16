import CLZ4
import CTensorKernels
import Testing

@testable import TensorBlob

/// Gaussian-like values with some exact ties, for top-k.
func gradientLike(_ n: Int, seed: UInt64) -> [Float] {
    var rng = RandomBits(state: seed)
    return (0..<n).map { _ in
        let r = rng.next()
        // One in eight is one of a few repeated magnitudes, so ties are common.
        if r % 8 == 0 { return Float(Int(r >> 8 % 5) - 2) * 0.125 }
        return Float(Int64(bitPattern: r) >> 40) * 1e-7
    }
}

/// The top-k indices by the definition: sort by magnitude bits (descending), then index.
func referenceTopK(_ v: [Float], k: Int) -> [UInt32] {
    let order = v.indices.sorted {
        let (a, b) = (v[$0].bitPattern & 0x7FFF_FFFF, v[$1].bitPattern & 0x7FFF_FFFF)
        return a != b ? a > b : $0 < $1
    }
    return order.prefix(k).sorted().map { UInt32($0) }
}

/// `values` rounded to `dtype` as a blob stores them.
func rounded(_ values: [Float], _ dtype: DType) -> [Float] {
    var out = values
    values.withUnsafeBufferPointer { v in out.withUnsafeMutableBufferPointer { dtype.round(v, into: $0) } }
    return out
}

@Suite struct SparseBlobTests {
    @Test(arguments: DType.allCases, [0.01, 0.1, 0.5])
    func topKBlobsDecodeToTheSelectedValues(dtype: DType, fraction: Double) throws {
        for n in [1, 2, 100, 4097, 100_003] {
            let v = gradientLike(n, seed: UInt64(n))
            let sparse = try SparseGradient.topK(v, fraction: fraction)
            let blob = try TensorBlob.encodeTopK(v, fraction: fraction, dtype: dtype, step: 5, producer: 2)
            #expect(blob == TensorBlob.encode(sparse, dtype: dtype, step: 5, producer: 2))
            let (h, out) = try TensorBlob.decode(blob)
            #expect((h.count, h.step, h.producer, h.dtype) == (UInt64(n), 5, 2, dtype))
            // Small or dense selections do not pay as pairs and are stored raw.
            if n >= 4097 && fraction <= 0.1 { #expect(h.codec == .sparseLZ4) }
            var expected = [Float](repeating: 0, count: n)
            let kept = rounded(sparse.values, dtype)
            for (i, x) in zip(sparse.indices, kept) { expected[Int(i)] = x }
            #expect(out.map(\.bitPattern) == expected.map(\.bitPattern))
            // The pairs come back as they went in (rounded), dense-free.
            let (_, pairs) = try TensorBlob.decodeSparse(blob)
            if h.codec == .sparseLZ4 {
                #expect(pairs.indices == sparse.indices)
                #expect(pairs.values.map(\.bitPattern) == kept.map(\.bitPattern))
            }
            #expect(pairs.dense.map(\.bitPattern) == expected.map(\.bitPattern))
        }
    }

    @Test func selectionIsTheDefinition() throws {
        for (n, fraction) in [(1, 0.01), (10, 0.01), (10, 0.15), (1000, 0.01), (1000, 0.07), (5000, 1.0), (777, 0.5)] {
            let v = gradientLike(n, seed: UInt64(n) &* 31)
            let k = try TopK.count(of: n, fraction: fraction)
            #expect(k == min(n, max(1, Int((fraction * Double(n)).rounded(.up)))))
            #expect(try TopK.select(v, fraction: fraction) == referenceTopK(v, k: k))
        }
        // Ties go to the lower index; magnitude ignores the sign; NaN is largest.
        #expect(try TopK.select([1, -3, 3, 2, -3], fraction: 0.4) == [1, 2])
        #expect(try TopK.select([0, 0, 0, 0], fraction: 0.5) == [0, 1])
        #expect(try TopK.select([1, .nan, .infinity, 2], fraction: 0.5) == [1, 2])
        #expect(try TopK.select([Float](), fraction: 0.5) == [])
        #expect(try TopK.count(of: 100, fraction: 0.01) == 1)
        #expect(try TopK.count(of: 1_000_000, fraction: 0.01) == 10_000)
    }

    @Test(arguments: [0, -0.1, 1.5, 1.0000001, Double.nan, Double.infinity, -Double.infinity])
    func fractionsOutsideZeroToOneAreRefused(fraction: Double) {
        #expect {
            try TopK.select([1, 2, 3], fraction: fraction)
        } throws: { e in
            let e = e as! GradientEncodingError
            return e.code == .invalidFraction && e.message.contains("\(fraction)") && e.message.contains("(0, 1]")
        }
        #expect(throws: GradientEncodingError.self) {
            try TensorBlob.encodeTopK([1], fraction: fraction, step: 0, producer: 0)
        }
    }

    @Test func encodingSpecsParse() throws {
        let good: [(String, GradientEncoding)] = [
            ("raw", .dense(.f32, .raw)), ("shuffle-lz4", .dense(.f32, .shuffleLZ4)),
            ("bf16-shuffle-lz4", .dense(.bf16, .shuffleLZ4)), ("f16-lz4", .dense(.f16, .lz4)),
            ("sparse-lz4", .dense(.f32, .sparseLZ4)), ("topk:0.01", .topK(fraction: 0.01, dtype: .f32)),
            ("topk:1", .topK(fraction: 1, dtype: .f32)), ("bf16-topk:0.1", .topK(fraction: 0.1, dtype: .bf16)),
            ("topk:1e-3", .topK(fraction: 0.001, dtype: .f32)),
        ]
        for (spec, expected) in good {
            let e = try GradientEncoding(parsing: spec)
            #expect(e == expected, "\(spec)")
            #expect(try GradientEncoding(parsing: e.description) == e)
        }
        #expect(GradientEncoding.topK(fraction: 0.01, dtype: .f32).description == "topk:0.01")
        let bad: [(String, GradientEncodingError.Code)] = [
            ("topk:0", .invalidFraction), ("topk:1.5", .invalidFraction), ("topk:abc", .invalidFraction),
            ("topk:", .invalidFraction), ("topk:-0.5", .invalidFraction), ("topk:nan", .invalidFraction),
            ("topk:inf", .invalidFraction), ("topk:0x1p-3", .invalidFraction), ("gzip", .unknownEncoding),
            ("", .unknownEncoding), ("bf17-raw", .unknownEncoding), ("topq:0.1", .unknownEncoding),
            ("bf16-", .unknownEncoding), ("f32-topk-0.1", .unknownEncoding), ("RAW", .unknownEncoding),
        ]
        for (spec, code) in bad {
            #expect(
                throws: GradientEncodingError.self, "\(spec)",
                performing: { try GradientEncoding(parsing: spec) })
            do { _ = try GradientEncoding(parsing: spec) } catch {
                #expect(error.code == code, "\(spec): \(error)")
                #expect(error.message.contains("'\(spec)'"), "\(error)")
            }
        }
    }

    @Test(arguments: DType.allCases)
    func encodingsEncodeAsTheyName(dtype: DType) throws {
        let v = gradientLike(20_000, seed: 3)
        let topk = try GradientEncoding(parsing: dtype == .f32 ? "topk:0.02" : "\(dtype)-topk:0.02")
        let blob = v.withUnsafeBufferPointer { topk.encode($0, step: 1, producer: 4) }
        #expect(blob == (try TensorBlob.encodeTopK(v, fraction: 0.02, dtype: dtype, step: 1, producer: 4)))
        let dense = GradientEncoding.dense(dtype, .shuffleLZ4)
        #expect(
            v.withUnsafeBufferPointer { dense.encode($0, step: 1, producer: 4) }
                == TensorBlob.encode(v, dtype: dtype, codec: .shuffleLZ4, step: 1, producer: 4))
    }

    /// As a codec, sparse-lz4 keeps every element that is not +0, bit for bit (−0, NaN payloads,
    /// infinities, subnormals), and stores data with too few zeros raw.
    @Test(arguments: DType.allCases)
    func sparseCodecIsLossless(dtype: DType) throws {
        var v = sparse(50_000)
        v[3] = -0.0
        v[10] = Float(bitPattern: 0x7FC0_1234)
        v[11] = -.infinity
        v[12] = Float(bitPattern: 1)
        v[49_999] = 7
        let blob = TensorBlob.encode(v, dtype: dtype, codec: .sparseLZ4, step: 0, producer: 0)
        #expect(blob[6] == BlobCodec.sparseLZ4.rawValue)
        #expect(blob.count < 50_000 * dtype.byteWidth / 20)
        let out = try TensorBlob.decode(blob).values
        #expect(out.map(\.bitPattern) == rounded(v, dtype).map(\.bitPattern))
        let dense = gradientLike(1000, seed: 1)
        let raw = TensorBlob.encode(dense, dtype: dtype, codec: .sparseLZ4, step: 0, producer: 0)
        #expect(raw[6] == BlobCodec.raw.rawValue)
        // All zeros: the pair count alone.
        let zeros = TensorBlob.encode(
            [Float](repeating: 0, count: 100), dtype: dtype, codec: .sparseLZ4, step: 0, producer: 0)
        #expect(zeros.count == BlobHeader.size + 4 && zeros[6] == BlobCodec.sparseLZ4.rawValue)
        #expect(try TensorBlob.decode(zeros).values == [Float](repeating: 0, count: 100))
    }

    @Test(arguments: DType.allCases)
    func partsAndTwoPhaseDecodeAgreeWithEncode(dtype: DType) throws {
        let v = sparse(30_000)
        let parts = v.withUnsafeBufferPointer {
            TensorBlob.encodeParts($0, dtype: dtype, codec: .sparseLZ4, step: 2, producer: 1)
        }
        let blob = v.withUnsafeBufferPointer { p in parts.segments(values: p).flatMap { Array($0) } }
        #expect(blob == TensorBlob.encode(v, dtype: dtype, codec: .sparseLZ4, step: 2, producer: 1))
        #expect(blob[6] == BlobCodec.sparseLZ4.rawValue)
        var out = [Float](repeating: 1, count: v.count)
        let scratch = DecodeScratch()
        try out.withUnsafeMutableBufferPointer { dst in
            try blob.withUnsafeBytes { b in
                let prefix = UnsafeRawBufferPointer(rebasing: b[0..<48])
                let (h, payload) = try TensorBlob.payloadTarget(
                    prefix: prefix, blobLength: b.count, destination: dst, scratch: scratch)
                payload.copyMemory(from: UnsafeRawBufferPointer(rebasing: b[48...]))
                try TensorBlob.finishDecode(
                    h, prefix: prefix, payload: UnsafeRawBufferPointer(payload), into: dst, scratch: scratch)
            }
        }
        #expect(out.map(\.bitPattern) == rounded(v, dtype).map(\.bitPattern))
    }

    /// The layout of docs/wire-format.md, byte for byte, on a small example.
    @Test func payloadLayout() throws {
        let s = try SparseGradient(count: 1000, indices: [2, 7, 300], values: [1.5, -2, 0.25])
        let blob = TensorBlob.encode(s, step: 0, producer: 0)
        #expect(blob[6] == 3 && blob[5] == 0)
        let payload = Array(blob[48...])
        #expect(payload[0..<4] == [3, 0, 0, 0])
        var section = [UInt8](repeating: 0, count: 3 * 8)
        let n = payload.withUnsafeBytes { p in
            section.withUnsafeMutableBytes {
                clz4_decompress_safe(p.baseAddress! + 4, $0.baseAddress, Int32(p.count - 4), Int32($0.count))
            }
        }
        #expect(n == 24)
        // Deltas 2, 5, 293 (0x125) as u32, shuffled by 4: all low bytes, then the next ones.
        #expect(section[0..<12] == [2, 5, 0x25, 0, 0, 1, 0, 0, 0, 0, 0, 0])
        // 1.5 = 0x3FC00000, -2 = 0xC0000000, 0.25 = 0x3E800000, shuffled by 4.
        #expect(section[12..<24] == [0, 0, 0, 0, 0, 0, 0xC0, 0, 0x80, 0x3F, 0xC0, 0x3E])
    }

    @Test func pairsAreCheckedWhenMade() {
        #expect { try SparseGradient(count: 10, indices: [1, 1], values: [1, 2]) } throws: {
            ($0 as? TensorBlobError)?.code == .invalidIndex
        }
        #expect { try SparseGradient(count: 10, indices: [3, 2], values: [1, 2]) } throws: {
            ($0 as? TensorBlobError)?.code == .invalidIndex
        }
        #expect { try SparseGradient(count: 10, indices: [10], values: [1]) } throws: {
            ($0 as? TensorBlobError)?.message == "pair 0: index 10 is out of range for 10 elements"
        }
        #expect { try SparseGradient(count: 10, indices: [1], values: [1, 2]) } throws: {
            ($0 as? TensorBlobError)?.code == .lengthMismatch
        }
    }

    /// Adding the pairs into a sum is the same bits as adding the decoded dense vector.
    @Test(arguments: DType.allCases)
    func addingPairsIsAddingTheDenseVector(dtype: DType) throws {
        let n = 50_000
        var sum = gradientLike(n, seed: 9)
        for i in stride(from: 0, to: n, by: 101) { sum[i] = 0 }
        let blob = try TensorBlob.encodeTopK(
            gradientLike(n, seed: 10), fraction: 0.05, dtype: dtype, step: 0, producer: 0)
        let dense = try TensorBlob.decode(blob).values
        var viaDense = sum
        viaDense.withUnsafeMutableBufferPointer { s in
            dense.withUnsafeBufferPointer { ctk_add_f32(s.baseAddress!, $0.baseAddress!, n) }
        }
        let pairs = try TensorBlob.decodeSparse(blob).sparse
        var viaPairs = sum
        #expect(viaPairs.withUnsafeMutableBufferPointer { pairs.add(into: $0) })
        #expect(viaPairs.map(\.bitPattern) == viaDense.map(\.bitPattern))
        // A sum holding −0: the dense add turns it into +0, so does `add` when told.
        for i in stride(from: 1, to: n, by: 97) { sum[i] = -0.0 }
        viaDense = sum
        viaDense.withUnsafeMutableBufferPointer { s in
            dense.withUnsafeBufferPointer { ctk_add_f32(s.baseAddress!, $0.baseAddress!, n) }
        }
        viaPairs = sum
        viaPairs.withUnsafeMutableBufferPointer { _ = pairs.add(into: $0, sumMayHoldNegativeZero: true) }
        #expect(viaPairs.map(\.bitPattern) == viaDense.map(\.bitPattern))
        // A non-finite value is reported.
        let bad = try SparseGradient(count: 3, indices: [1], values: [.nan])
        var s3: [Float] = [0, 0, 0]
        #expect(!s3.withUnsafeMutableBufferPointer { bad.add(into: $0) })
    }
}
