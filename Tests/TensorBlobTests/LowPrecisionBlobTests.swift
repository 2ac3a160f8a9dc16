import CLZ4
import Testing

@testable import TensorBlob

/// Blobs of dtype bf16 and f16: written from f32 values, rounded as the kernels' references
/// say, read back as f32, and validated as strictly as f32 blobs.
@Suite struct LowPrecisionBlobTests {
    /// The first index where `values` differ from the bit patterns `expected` (or the lengths).
    func firstMismatch(_ values: [Float], _ expected: [UInt32]) -> String? {
        guard values.count == expected.count else { return "\(values.count) values, expected \(expected.count)" }
        guard let i = values.indices.first(where: { values[$0].bitPattern != expected[$0] }) else { return nil }
        return
            "element \(i): 0x\(String(values[i].bitPattern, radix: 16)), expected 0x\(String(expected[i], radix: 16))"
    }

    /// Gradient-like values with the special ones: signed zeros, infinities, NaNs (with payload),
    /// f32 subnormals, values past f16's range and ties.
    static func values(_ n: Int, seed: UInt64) -> [Float] {
        var rng = RandomBits(state: seed)
        var v = rng.floats(n)
        let special: [Float] = [
            0, -0.0, .infinity, -.infinity, .nan, Float(bitPattern: 0xFFA0_0001), .leastNonzeroMagnitude,
            -.leastNormalMagnitude, 65504, 65520, 70_000, -1e30, .greatestFiniteMagnitude,
            Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), 0x1p-24, 0x1p-25, 1.0009765625,
        ]
        for (i, s) in special.enumerated() where i * 7 < n { v[i * 7] = s }
        return v
    }

    static func reference(_ dtype: DType, _ v: [Float]) -> [UInt16] {
        v.map { dtype == .bf16 ? ConversionKernelTests.bf16Reference($0) : ConversionKernelTests.f16Reference($0) }
    }

    static func widened(_ dtype: DType, _ h: [UInt16]) -> [UInt32] {
        h.map { dtype == .bf16 ? UInt32($0) << 16 : ConversionKernelTests.f16WidenReference($0) }
    }

    @Test(arguments: [DType.bf16, .f16], BlobCodec.allCases)
    func roundTripsToTheRoundedValues(dtype: DType, codec: BlobCodec) throws {
        for count in [0, 1, 7, 33, 100_003] {
            for v in [Self.values(count, seed: UInt64(count)), sparse(count)] {
                let blob = TensorBlob.encode(v, dtype: dtype, codec: codec, step: 5, producer: 2)
                let (h, out) = try TensorBlob.decode(blob)
                #expect(h.dtype == dtype)
                #expect(h.count == UInt64(count))
                #expect((h.step, h.producer) == (5, 2))
                let expected: [UInt32] = Self.widened(dtype, Self.reference(dtype, v))
                #expect(firstMismatch(out, expected) == nil)
                // DType.round gives the same values without a blob (what error feedback uses).
                var rounded = [Float](repeating: 0, count: count)
                v.withUnsafeBufferPointer { src in rounded.withUnsafeMutableBufferPointer { dtype.round(src, into: $0) }
                }
                #expect(firstMismatch(rounded, expected) == nil)
            }
        }
    }

    @Test(arguments: [DType.bf16, .f16])
    func payloadLayoutIsLittleEndianElementsShuffledByTwo(dtype: DType) throws {
        let v = (0..<4000).map { Float($0 % 50) * 0.125 }  // compressible
        let expected = Self.reference(dtype, v).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        let raw = TensorBlob.encode(v, dtype: dtype, codec: .raw, step: 0, producer: 0)
        #expect(raw[5] == dtype.rawValue)
        #expect(raw[6] == 0)
        #expect(Array(raw[BlobHeader.size...]) == expected)
        #expect(raw.count == BlobHeader.size + 2 * v.count)

        let shuffled = TensorBlob.encode(v, dtype: dtype, codec: .shuffleLZ4, step: 0, producer: 0)
        #expect(shuffled[6] == BlobCodec.shuffleLZ4.rawValue)
        var planes = [UInt8](repeating: 0, count: expected.count)
        let n = shuffled[BlobHeader.size...].withUnsafeBytes { p in
            planes.withUnsafeMutableBytes {
                clz4_decompress_safe(p.baseAddress, $0.baseAddress, Int32(p.count), Int32($0.count))
            }
        }
        #expect(Int(n) == expected.count)
        let low: [UInt8] = (0..<v.count).map { expected[2 * $0] }
        let high: [UInt8] = (0..<v.count).map { expected[2 * $0 + 1] }
        #expect(Array(planes[0..<v.count]) == low)
        #expect(Array(planes[v.count...]) == high)
    }

    @Test(arguments: [DType.bf16, .f16], BlobCodec.allCases)
    func partsAndTwoPhaseDecodeAgreeWithEncode(dtype: DType, codec: BlobCodec) throws {
        let v = Self.values(20_001, seed: 3)
        let parts = v.withUnsafeBufferPointer {
            TensorBlob.encodeParts($0, dtype: dtype, codec: codec, step: 9, producer: 3)
        }
        let blob = v.withUnsafeBufferPointer { p in parts.segments(values: p).flatMap { Array($0) } }
        #expect(blob == TensorBlob.encode(v, dtype: dtype, codec: codec, step: 9, producer: 3))
        #expect(parts.payload != nil)  // never the f32 values themselves
        let back = try StreamingTests().twoPhase(blob, count: v.count)
        let expected: [UInt32] = Self.widened(dtype, Self.reference(dtype, v))
        #expect(firstMismatch(back, expected) == nil)
    }

    @Test func incompressibleTwoByteBlobsAreStoredRaw() throws {
        // Every 16-bit pattern equally likely (NaNs aside): nothing for LZ4 to find.
        var rng = RandomBits(state: 4)
        let bits = (0..<4096).map { _ in UInt16(truncatingIfNeeded: rng.next()) }
        let inputs: [(DType, [Float])] = [
            (.bf16, bits.map { Float(bitPattern: UInt32($0) << 16) }.map { $0.isNaN ? 1 : $0 }),
            (.f16, bits.map { Float(Float16(bitPattern: $0)) }.map { $0.isNaN ? 1 : $0 }),
        ]
        for (dtype, v) in inputs {
            for codec in [BlobCodec.lz4, .shuffleLZ4, .bitshuffleLZ4] {
                let blob = TensorBlob.encode(v, dtype: dtype, codec: codec, step: 0, producer: 0)
                #expect(blob[6] == BlobCodec.raw.rawValue)
                #expect(blob.count == BlobHeader.size + 2 * v.count)
                #expect(firstMismatch(try TensorBlob.decode(blob).values, v.map(\.bitPattern)) == nil)
            }
        }
    }

    static let samples: [[UInt8]] = [DType.bf16, .f16].flatMap { d in
        BlobCodec.allCases.map { TensorBlob.encode(sparse(3001), dtype: d, codec: $0, step: 3, producer: 1) }
    }

    @Test func everySingleBitFlipIsDetected() {
        var rng = RandomBits(state: 8)
        for blob in Self.samples {
            let positions =
                Array(0..<(BlobHeader.size * 8)) + (0..<300).map { _ in Int(rng.next() % UInt64(blob.count * 8)) }
            for bit in positions {
                var bad = blob
                bad[bit / 8] ^= UInt8(1 << (bit % 8))
                #expect(throws: TensorBlobError.self, "bit \(bit)") { try TensorBlob.decode(bad) }
            }
        }
    }

    /// Re-labels a blob's dtype and restamps the checksum, so that the size checks are reached.
    func relabel(_ blob: [UInt8], dtype: DType) -> [UInt8] {
        var b = blob
        b[5] = dtype.rawValue
        b.withUnsafeMutableBytes { storeLE(TensorBlob.checksum(UnsafeRawBufferPointer($0)), $0, 40) }
        return b
    }

    @Test func sizesAreCheckedAgainstTheDTypesWidth() {
        // An f32 raw payload is count x 4 bytes: as bf16 it is twice too long.
        let f32 = TensorBlob.encode([1, 2, 3, 4], codec: .raw, step: 0, producer: 0)
        let expectedError = TensorBlobError(.lengthMismatch, "raw payload of 16 bytes for 4 bf16 elements (8 bytes)")
        #expect(throws: expectedError) { try TensorBlob.decode(relabel(f32, dtype: .bf16)) }
        // A bf16 raw payload relabelled f32 is half as long as it must be.
        let bf16 = TensorBlob.encode([1, 2, 3, 4], dtype: .bf16, codec: .raw, step: 0, producer: 0)
        #expect { try TensorBlob.decode(relabel(bf16, dtype: .f32)) } throws: {
            ($0 as? TensorBlobError)?.code == .lengthMismatch
        }
        // A compressed payload must be smaller than count x 2 bytes.
        let v = sparse(3001)
        let lz4f32 = TensorBlob.encode(v, codec: .lz4, step: 0, producer: 0)
        let big = lz4f32.count - BlobHeader.size >= 2 * v.count
        if big {
            #expect { try TensorBlob.decode(relabel(lz4f32, dtype: .f16)) } throws: {
                ($0 as? TensorBlobError)?.code == .lengthMismatch
            }
        }
        // An f32 LZ4 block relabelled f16 decodes to twice the bytes: corrupt, not accepted.
        if !big {
            #expect { try TensorBlob.decode(relabel(lz4f32, dtype: .f16)) } throws: {
                ($0 as? TensorBlobError)?.code == .corruptPayload
            }
        }
        // dtype bytes past 2 are unknown.
        var unknown = bf16
        unknown[5] = 3
        #expect { try TensorBlob.decode(unknown) } throws: { ($0 as? TensorBlobError)?.code == .unsupportedDType }
    }

    @Test func dtypeNames() throws {
        #expect(DType.allCases.map(\.description) == ["f32", "f16", "bf16"])
        #expect(DType(name: "bf16") == .bf16)
        #expect(DType(name: "fp16") == nil)
    }
}
