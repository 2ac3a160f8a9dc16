import CTensorKernels
import Foundation
import Testing

/// The shuffle and f32 <-> bf16/f16 kernels, every implementation this CPU runs, bit for bit
/// against simple references written from the rules of docs/wire-format.md.
@Suite struct ConversionKernelTests {
    static let impls: [(String, Int32)] = [
        ("portable", Int32(CTK_IMPL_PORTABLE)), ("sse2", Int32(CTK_IMPL_SSE2)), ("avx2", Int32(CTK_IMPL_AVX2)),
        ("f16c", Int32(CTK_IMPL_F16C)),
    ]

    /// Round to nearest even by comparing distances in Double (exact for these values); past the
    /// largest finite bf16 the next value up is 2^128, as IEEE rounding has it.
    static func bf16Reference(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        if x.isNaN { return UInt16(b >> 16) | 0x0040 }
        if x.isInfinite { return UInt16(b >> 16) }
        let lo = b & 0xFFFF_0000
        let up = lo &+ 0x1_0000
        let loValue = Double(Float(bitPattern: lo))
        let upValue = up & 0x7FFF_FFFF == 0x7F80_0000 ? (x < 0 ? -0x1p128 : 0x1p128) : Double(Float(bitPattern: up))
        let dLo = abs(Double(x) - loValue)
        let dUp = abs(upValue - Double(x))
        if dLo < dUp || (dLo == dUp && (lo >> 16) & 1 == 0) { return UInt16(lo >> 16) }
        return UInt16(truncatingIfNeeded: up >> 16)
    }

    /// Swift's Float16 rounds to nearest even; NaNs follow the documented rule.
    static func f16Reference(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        if x.isNaN { return UInt16(b >> 16 & 0x8000) | 0x7E00 | UInt16(b >> 13 & 0x3FF) }
        return Float16(x).bitPattern
    }

    static func f16WidenReference(_ h: UInt16) -> UInt32 {
        let f = Float16(bitPattern: h)
        if f.isNaN { return UInt32(h & 0x8000) << 16 | 0x7FC0_0000 | UInt32(h & 0x3FF) << 13 }
        return Float(f).bitPattern
    }

    /// Every high half with the low halves that decide rounding (at, around and between the
    /// ties), plus random bit patterns.
    static func inputs(lowBits: Int) -> [Float] {
        let low = UInt32(1) << UInt32(lowBits)
        let half = low / 2
        let lows: [UInt32] = [0, 1, half - 1, half, half + 1, low - 1, 0x5A5A_5A5A & (low - 1)]
        var out: [Float] = []
        for high in 0..<(UInt32(1) << UInt32(32 - lowBits)) {
            for l in lows { out.append(Float(bitPattern: high << UInt32(lowBits) | l)) }
        }
        var rng = RandomBits(state: 77)
        for _ in 0..<200_000 { out.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))) }
        return out
    }

    func check(
        _ name: String, inputs: [Float], reference: (Float) -> UInt16,
        convert: (UnsafePointer<Float>, UnsafeMutablePointer<UInt16>, Int, Int32) -> Int32
    ) -> [String] {
        let expected = inputs.map(reference)
        var ran: [String] = []
        for (implName, impl) in Self.impls {
            // Odd offsets and lengths, so that every SIMD path also runs its scalar tail.
            for (from, to) in [(0, inputs.count), (3, inputs.count - 5)] {
                var out = [UInt16](repeating: 0xDEAD, count: to - from)
                let ok = inputs.withUnsafeBufferPointer { src in
                    out.withUnsafeMutableBufferPointer {
                        convert(src.baseAddress! + from, $0.baseAddress!, to - from, impl)
                    }
                }
                guard ok == 1 else { continue }
                if let i = (0..<out.count).first(where: { out[$0] != expected[from + $0] }) {
                    let x = inputs[from + i].bitPattern
                    Issue.record(
                        "\(name) \(implName): 0x\(String(x, radix: 16)) gave 0x\(String(out[i], radix: 16)), expected 0x\(String(expected[from + i], radix: 16))"
                    )
                }
                if from == 0 { ran.append(implName) }
            }
        }
        return ran
    }

    @Test func f32ToBF16MatchesTheReference() {
        let ran = check("f32->bf16", inputs: Self.inputs(lowBits: 16), reference: Self.bf16Reference) {
            ctk_f32_to_bf16_with($0, $1, $2, $3)
        }
        #expect(ran.contains("portable"))
        #if arch(x86_64)
            #expect(ran.contains("sse2"))
        #endif
    }

    @Test func f32ToF16MatchesTheReference() {
        let ran = check("f32->f16", inputs: Self.inputs(lowBits: 13), reference: Self.f16Reference) {
            ctk_f32_to_f16_with($0, $1, $2, $3)
        }
        #expect(ran.contains("portable"))
    }

    @Test func everyBF16AndF16WidensExactly() {
        let all = (0...UInt16.max).map { $0 }
        for (implName, impl) in Self.impls {
            for (name, reference, widen) in [
                ("bf16", { (h: UInt16) in UInt32(h) << 16 }, ctk_bf16_to_f32_with),
                ("f16", Self.f16WidenReference, ctk_f16_to_f32_with),
            ]
                as [(
                    String, (UInt16) -> UInt32,
                    (UnsafePointer<UInt16>?, UnsafeMutablePointer<Float>?, Int, Int32) -> Int32
                )]
            {
                var out = [Float](repeating: 0, count: all.count - 1)
                // From element 1, so that the SIMD blocks start unaligned and the tail is used.
                let ok = all.withUnsafeBufferPointer { src in
                    out.withUnsafeMutableBufferPointer {
                        widen(src.baseAddress! + 1, $0.baseAddress!, all.count - 1, impl)
                    }
                }
                guard ok == 1 else { continue }
                for i in 0..<out.count where out[i].bitPattern != reference(all[i + 1]) {
                    Issue.record(
                        "\(name)->f32 \(implName): 0x\(String(all[i + 1], radix: 16)) gave 0x\(String(out[i].bitPattern, radix: 16))"
                    )
                    break
                }
            }
        }
    }

    @Test func roundTripsAreExactForRepresentableValues() {
        // Every finite bf16 and f16 value survives widening and narrowing again.
        for h in 0...UInt16.max {
            let bf = Float(bitPattern: UInt32(h) << 16)
            if !bf.isNaN { #expect(Self.bf16Reference(bf) == h) }
            let f16 = Float16(bitPattern: h)
            if !f16.isNaN { #expect(Self.f16Reference(Float(f16)) == h) }
        }
    }

    @Test(arguments: [2, 4])
    func shufflesMatchTheDefinitionOnEveryPath(width: Int) {
        var rng = RandomBits(state: UInt64(width))
        let bytes = (0..<(width * 5003 + 7)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        for (implName, impl) in Self.impls {
            for count in Array(0..<70) + [1000, 4097, 5003] {
                for offset in [0, 1] {
                    let src = Array(bytes[offset..<(offset + count * width)])
                    var expected = [UInt8](repeating: 0, count: src.count)
                    for i in 0..<count { for j in 0..<width { expected[j * count + i] = src[i * width + j] } }
                    guard
                        let (shuffled, back) = roundTrip(
                            src, count: count, width: width, impl: impl, ctk_shuffle_with, ctk_unshuffle_with)
                    else { continue }
                    #expect(shuffled == expected, "shuffle \(implName) width \(width) count \(count)")
                    #expect(back == src, "unshuffle \(implName) width \(width) count \(count)")
                }
            }
        }
    }

    @Test func fusedConversionsAreTheKernelsOneAfterTheOther() {
        var rng = RandomBits(state: 21)
        // Lengths around the fused loops' 4096-element blocks and the SIMD blocks.
        for n in [0, 1, 15, 33, 4095, 4096, 4097, 10_000] {
            let x = (0..<n).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }
            for (narrow, fused, widen, fusedWiden) in [
                (ctk_f32_to_bf16, ctk_f32_to_bf16_shuffled, ctk_bf16_to_f32, ctk_bf16_shuffled_to_f32),
                (ctk_f32_to_f16, ctk_f32_to_f16_shuffled, ctk_f16_to_f32, ctk_f16_shuffled_to_f32),
            ]
                as [(
                    (UnsafePointer<Float>?, UnsafeMutablePointer<UInt16>?, Int) -> Void,
                    (UnsafePointer<Float>?, UnsafeMutableRawPointer?, Int) -> Void,
                    (UnsafePointer<UInt16>?, UnsafeMutablePointer<Float>?, Int) -> Void,
                    (UnsafeRawPointer?, UnsafeMutablePointer<Float>?, Int) -> Void
                )]
            {
                var elements = [UInt16](repeating: 0, count: n)
                var planes = [UInt8](repeating: 0, count: 2 * n)
                var fusedPlanes = [UInt8](repeating: 1, count: 2 * n)
                elements.withUnsafeMutableBufferPointer { narrow(x, $0.baseAddress, n) }
                elements.withUnsafeBytes { e in
                    planes.withUnsafeMutableBytes { ctk_shuffle(e.baseAddress, $0.baseAddress, n, 2) }
                }
                fusedPlanes.withUnsafeMutableBytes { fused(x, $0.baseAddress, n) }
                #expect(fusedPlanes == planes, "narrow, n = \(n)")
                var widened = [Float](repeating: 0, count: n)
                var fusedWidened = [Float](repeating: 1, count: n)
                elements.withUnsafeBufferPointer { e in
                    widened.withUnsafeMutableBufferPointer { widen(e.baseAddress, $0.baseAddress, n) }
                }
                planes.withUnsafeBytes { p in
                    fusedWidened.withUnsafeMutableBufferPointer { fusedWiden(p.baseAddress, $0.baseAddress, n) }
                }
                #expect(fusedWidened.map(\.bitPattern) == widened.map(\.bitPattern), "widen, n = \(n)")
            }
        }
    }

    @Test func implementationsReportWhatTheyRun() {
        #expect(ctk_impl_available(Int32(CTK_IMPL_PORTABLE)) == 1)
        #expect(ctk_impl_available(99) == 0)
        var out = [UInt16](repeating: 7, count: 4)
        // bf16 has no F16C path and f16 no SSE2 path: refused, nothing written.
        let refused = [Float](repeating: 1, count: 4).withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer {
                ctk_f32_to_bf16_with(src.baseAddress, $0.baseAddress, 4, Int32(CTK_IMPL_F16C))
                    + ctk_f32_to_f16_with(src.baseAddress, $0.baseAddress, 4, Int32(CTK_IMPL_SSE2))
            }
        }
        #expect(refused == 0)
        #expect(out == [7, 7, 7, 7])
    }
}
