import CTensorKernels
import Testing

@testable import TensorBlob

struct RandomBits {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func floats(_ n: Int) -> [Float] { (0..<n).map { _ in Float(Int64(bitPattern: next()) >> 40) * 1e-7 } }
}

/// Mostly zeros with a few values: compresses well under every codec.
func sparse(_ n: Int) -> [Float] { (0..<n).map { $0 % 97 == 0 ? Float($0 % 13) * 0.5 : 0 } }

@Suite struct CodecRoundTrip {
    @Test(arguments: BlobCodec.allCases, [0, 1, 7, (1 << 20) + 3])
    func roundTripsDenseAndSparse(codec: BlobCodec, count: Int) throws {
        var rng = RandomBits(state: UInt64(count) &+ UInt64(codec.rawValue))
        for values in [rng.floats(count), sparse(count)] {
            let blob = TensorBlob.encode(values, codec: codec, step: 42, producer: 7)
            let (h, out) = try TensorBlob.decode(blob)
            #expect(out.map(\.bitPattern) == values.map(\.bitPattern))
            #expect(h.count == UInt64(count))
            #expect(h.step == 42)
            #expect(h.producer == 7)
            #expect(h.dtype == .f32)
            #expect(blob.count == BlobHeader.size + Int(h.payloadLength))
        }
    }

    @Test func compressibleDataIsCompressed() throws {
        let values = sparse(100_000)
        for codec in [BlobCodec.lz4, .shuffleLZ4, .bitshuffleLZ4] {
            let blob = TensorBlob.encode(values, codec: codec, step: 0, producer: 0)
            let h = try blob.withUnsafeBytes { try TensorBlob.header(of: $0) }
            #expect(h.codec == codec)
            #expect(blob.count < values.count * 4 / 4)
        }
    }

    @Test func incompressibleDataIsStoredRaw() throws {
        var rng = RandomBits(state: 1)
        let values = (0..<4096).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0x7F7F_FFFF) }
        let blob = TensorBlob.encode(values, codec: .lz4, step: 1, producer: 1)
        let (h, out) = try TensorBlob.decode(blob)
        #expect(h.codec == .raw)
        #expect(out.map(\.bitPattern) == values.map(\.bitPattern))
    }

    @Test func decodesIntoCallerBufferOnlyWithMatchingCount() throws {
        let blob = TensorBlob.encode([1, 2, 3], codec: .raw, step: 0, producer: 0)
        var dst = [Float](repeating: 0, count: 4)
        #expect(throws: TensorBlobError.self) {
            try blob.withUnsafeBytes { b in
                try dst.withUnsafeMutableBufferPointer { try TensorBlob.decode(b, into: $0) }
            }
        }
        #expect(dst == [0, 0, 0, 0])
    }

    @Test func shuffleIsInvertible() {
        let bytes: [UInt8] = Array(0..<40)
        var shuffled = [UInt8](repeating: 0, count: 40)
        var back = [UInt8](repeating: 0, count: 40)
        for width in [4, 2, 8] {
            let n = 40 / width
            ctkShuffle(bytes, &shuffled, n, width)
            if width == 4 { #expect(Array(shuffled[0..<3]) == [0, 4, 8]) }
            ctkUnshuffle(shuffled, &back, n, width)
            #expect(back == bytes)
        }
    }

    @Test func crc32cMatchesKnownVector() {
        // The standard check value of CRC-32C for "123456789".
        let crc = Array("123456789".utf8).withUnsafeBytes { ctkCRC($0) }
        #expect(crc == 0xE306_9283)
    }

    @Test func crc32cOfLongBuffersMatchesPieceByPiece() {
        // Buffers from 256 bytes take the carry-less multiplication paths (128-bit; from 512 bytes
        // 256-bit where the CPU has AVX2 and VPCLMULQDQ, and from 28,800 bytes that folding and
        // three crc32 chains in one loop; from 1 KiB 512-bit with AVX-512), 12 KiB and up without
        // PCLMUL the three-chain path; pieces of 200 bytes chained one after the other take the
        // plain single chain. All must agree, for any length and alignment, and when the buffer
        // continues a running CRC (a blob's payload continues its header's).
        var rng = RandomBits(state: 9)
        let bytes = (0..<100_003).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let lengths = [
            255, 256, 257, 300, 511, 512, 513, 575, 639, 640, 1023, 1024, 1025, 4095, 12_288, 12_289, 28_799, 28_800,
            28_801, 29_311, 29_312, 40_000, 57_600, 58_113, 86_400, 99_990, 100_000,
        ]
        bytes.withUnsafeBytes { all in
            for length in lengths {
                for start in [0, 1, 3] where start + length <= all.count {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    var chained: UInt32 = 0
                    for piece in stride(from: 0, to: length, by: 200) {
                        let part = UnsafeRawBufferPointer(rebasing: slice[piece..<min(length, piece + 200)])
                        chained = ctk_crc32c(chained, part.baseAddress, part.count)
                    }
                    #expect(ctkCRC(slice) == chained, "start \(start), length \(length)")
                    let head = UnsafeRawBufferPointer(rebasing: slice[0..<40])
                    let rest = UnsafeRawBufferPointer(rebasing: slice[40...])
                    let continued = ctk_crc32c(ctkCRC(head), rest.baseAddress, rest.count)
                    #expect(continued == chained, "start \(start), length \(length), after 40 bytes")
                }
            }
        }
    }

    @Test func everyCRCPathThisCPUHasAgreesWithTheTable() {
        // ctk_crc32c uses one path per length; each path alone must give the portable table's
        // CRC for any length, alignment and running CRC, including the lengths where it hands
        // its tail to the next path. The table path and ctk_crc32c's choice are always there.
        var rng = RandomBits(state: 21)
        let bytes = (0..<70_003).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let paths = [
            CTK_CRC_AUTO, CTK_CRC_CHAINS, CTK_CRC_FOLD128, CTK_CRC_FOLD256, CTK_CRC_FOLD256_CHAINS, CTK_CRC_FOLD512,
        ].map { Int32($0) }
        #expect(ctk_crc32c_path_available(Int32(CTK_CRC_TABLE)) == 1)
        #expect(ctk_crc32c_path_available(Int32(CTK_CRC_AUTO)) == 1)
        #expect(ctk_crc32c_path_available(99) == 0)
        var unused: UInt32 = 7
        #expect(ctk_crc32c_with(&unused, bytes, 16, 99) == 0 && unused == 7)
        let lengths = [
            0, 1, 63, 64, 255, 256, 511, 512, 1023, 1024, 1151, 12_289, 28_799, 28_800, 28_801, 57_600, 70_000,
        ]
        bytes.withUnsafeBytes { all in
            for length in lengths {
                for start in [0, 3] where start + length <= all.count {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    for initial: UInt32 in [0, 0xDEAD_BEEF] {
                        var expected = initial
                        #expect(ctk_crc32c_with(&expected, slice.baseAddress, length, Int32(CTK_CRC_TABLE)) == 1)
                        for path in paths where ctk_crc32c_path_available(path) == 1 {
                            var crc = initial
                            #expect(ctk_crc32c_with(&crc, slice.baseAddress, length, path) == 1)
                            #expect(crc == expected, "path \(path), start \(start), length \(length), from \(initial)")
                        }
                    }
                }
            }
        }
    }

    @Test func crc32cIsTheSameFromManyThreadsAtOnce() async {
        // The folding constants are set up on first use; threads racing to it must all agree.
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 11) }
        let expected = bytes.withUnsafeBytes { b in
            stride(from: 0, to: b.count, by: 150).reduce(UInt32(0)) { crc, i in
                let part = UnsafeRawBufferPointer(rebasing: b[i..<min(b.count, i + 150)])
                return ctk_crc32c(crc, part.baseAddress, part.count)
            }
        }
        let results = await withTaskGroup(of: UInt32.self) { group in
            for _ in 0..<8 { group.addTask { bytes.withUnsafeBytes { ctkCRC($0) } } }
            return await group.reduce(into: [UInt32]()) { $0.append($1) }
        }
        #expect(results.allSatisfy { $0 == expected })
    }
}
