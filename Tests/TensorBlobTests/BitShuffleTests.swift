import CTensorKernels
import Foundation
import Testing

@testable import TensorBlob

/// The bit shuffle of the bitshuffle-lz4 codec (docs/wire-format.md, "Codecs"), on every kernel
/// path, against its definition; and what it does for gradient-like data.
@Suite struct BitShuffleTests {
    static let impls: [(String, Int32)] = [
        ("portable", Int32(CTK_IMPL_PORTABLE)), ("sse2", Int32(CTK_IMPL_SSE2)), ("avx2", Int32(CTK_IMPL_AVX2)),
    ]

    /// The definition, bit by bit.
    func reference(_ src: [UInt8], count n: Int, width w: Int) -> [UInt8] {
        let m = n - n % 8
        var out = [UInt8](repeating: 0, count: n * w)
        for j in 0..<w {
            for b in 0..<8 {
                for i in 0..<m where (src[i * w + j] >> b) & 1 == 1 {
                    out[(j * 8 + b) * (m / 8) + i / 8] |= UInt8(1 << (i % 8))
                }
            }
        }
        for k in (m * w)..<(n * w) { out[k] = src[k] }
        return out
    }

    @Test(arguments: [1, 2, 4])
    func matchesTheDefinitionOnEveryPath(width: Int) {
        var rng = RandomBits(state: UInt64(width) &+ 40)
        // 2048 + 160 and 2048 + 232: a last block through the 128-byte, 32-byte and narrower paths.
        let counts = Array(0..<41) + [63, 64, 65, 127, 128, 129, 2047, 2048, 2049, 2208, 2280, 4096 + 24, 5003]
        for count in counts {
            let src = (0..<(count * width)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let expected = reference(src, count: count, width: width)
            for (name, impl) in Self.impls {
                guard
                    let (shuffled, back) = roundTrip(
                        src, count: count, width: width, impl: impl, ctk_bitshuffle_with, ctk_bitunshuffle_with)
                else { continue }
                #expect(shuffled == expected, "bitshuffle \(name) width \(width) count \(count)")
                #expect(back == src, "bitunshuffle \(name) width \(width) count \(count)")
            }
        }
    }

    /// The fused conversions give the bytes of converting, then bit-shuffling, and back.
    @Test(arguments: [DType.bf16, .f16])
    func fusedConversionsAreTheKernelsOneAfterTheOther(dtype: DType) {
        var rng = RandomBits(state: 17)
        let (narrow, widen) =
            dtype == .bf16
            ? (ctk_f32_to_bf16_bitshuffled, ctk_bf16_bitshuffled_to_f32)
            : (ctk_f32_to_f16_bitshuffled, ctk_f16_bitshuffled_to_f32)
        for count in [0, 1, 7, 8, 9, 33, 128, 2047, 2048, 2049, 2208, 6007] {
            let values = rng.floats(count)
            var elements = [UInt8](repeating: 0, count: 2 * count)
            values.withUnsafeBufferPointer { v in
                elements.withUnsafeMutableBytes { dtype.narrow(v, into: $0.baseAddress!) }
            }
            var expected = [UInt8](repeating: 0, count: 2 * count)
            elements.withUnsafeBytes { e in
                expected.withUnsafeMutableBytes { ctk_bitshuffle(e.baseAddress, $0.baseAddress, count, 2) }
            }
            var fused = [UInt8](repeating: 0xAA, count: 2 * count)
            var back = [Float](repeating: .nan, count: count)
            values.withUnsafeBufferPointer { v in
                fused.withUnsafeMutableBytes { f in narrow(v.baseAddress, f.baseAddress, count) }
            }
            fused.withUnsafeBytes { f in
                back.withUnsafeMutableBufferPointer { widen(f.baseAddress, $0.baseAddress, count) }
            }
            var rounded = [Float](repeating: 0, count: count)
            values.withUnsafeBufferPointer { v in rounded.withUnsafeMutableBufferPointer { dtype.round(v, into: $0) } }
            #expect(fused == expected, "\(dtype) count \(count)")
            #expect(back.map(\.bitPattern) == rounded.map(\.bitPattern), "\(dtype) count \(count)")
        }
    }

    /// The example in docs/wire-format.md.
    @Test func theDocumentsExample() throws {
        let elements: [UInt8] = [0x80, 0x3F] + [UInt8](repeating: 0, count: 14)
        var out = [UInt8](repeating: 0, count: 16)
        elements.withUnsafeBytes { s in
            out.withUnsafeMutableBytes { ctk_bitshuffle(s.baseAddress, $0.baseAddress, 8, 2) }
        }
        #expect(out == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0])
        let values: [Float] = [1] + [Float](repeating: 0, count: 7)
        let blob = TensorBlob.encode(values, dtype: .bf16, codec: .bitshuffleLZ4, step: 0, producer: 0)
        #expect(try TensorBlob.decode(blob).values == values)
    }

    /// Gaussian gradients of scale 0.01 in bf16: the sign and exponent planes are runs, so the
    /// blob is well below bf16's 2 bytes per value, where the byte shuffle barely gains.
    @Test(arguments: [DType.bf16, .f32])
    func gradientLikeDataShrinksBeyondTheByteShuffle(dtype: DType) throws {
        var rng = RandomBits(state: 3)
        let n = 262_144
        let values: [Float] = (0..<n).map { _ in
            // Box-Muller from two uniforms in (0, 1].
            let u1 = Double(rng.next() >> 11 + 1) * 0x1p-53
            let u2 = Double(rng.next() >> 11) * 0x1p-53
            return Float(0.01 * (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2))
        }
        let bits = TensorBlob.encode(values, dtype: dtype, codec: .bitshuffleLZ4, step: 0, producer: 0)
        let bytes = TensorBlob.encode(values, dtype: dtype, codec: .shuffleLZ4, step: 0, producer: 0)
        #expect(bits[6] == BlobCodec.bitshuffleLZ4.rawValue)
        let raw = Double(n * dtype.byteWidth)
        #expect(raw / Double(bits.count - BlobHeader.size) >= 1.1, "\(bits.count) bytes")
        #expect(bits.count < bytes.count)
        var rounded = [Float](repeating: 0, count: n)
        values.withUnsafeBufferPointer { v in rounded.withUnsafeMutableBufferPointer { dtype.round(v, into: $0) } }
        #expect(try TensorBlob.decode(bits).values.map(\.bitPattern) == rounded.map(\.bitPattern))
    }

    @Test func specsNameTheCodec() throws {
        #expect(try GradientEncoding(parsing: "bf16-bitshuffle-lz4") == .dense(.bf16, .bitshuffleLZ4))
        #expect(try GradientEncoding(parsing: "bitshuffle-lz4") == .dense(.f32, .bitshuffleLZ4))
        #expect(BlobCodec(name: "bitshuffle-lz4") == .bitshuffleLZ4 && BlobCodec.bitshuffleLZ4.rawValue == 4)
    }
}
