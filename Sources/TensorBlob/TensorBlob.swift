import CLZ4
import CTensorKernels

/// Encodes and decodes tensor blobs: a 48-byte header followed by the payload.
public enum TensorBlob {
    /// The largest element count a decoder accepts unless told otherwise (1 GiB of f32).
    public static let defaultMaxElements = 1 << 28

    /// Encodes f32 values as a blob of `dtype` (f16 and bf16 round each value to nearest even).
    /// A compressed payload that would not be smaller than the raw bytes is stored raw, and the
    /// header then says `raw`.
    public static func encode(
        _ values: UnsafeBufferPointer<Float>, dtype: DType = .f32, codec: BlobCodec, step: UInt64, producer: UInt32
    ) -> [UInt8] {
        let rawBytes = values.count * dtype.byteWidth
        let elements = ElementBytes(values, dtype)
        if codec == .sparseLZ4, let payload = sparsePayload(elements) {
            defer { payload.deallocate() }
            return assemble(
                dtype: dtype, codec: .sparseLZ4, count: values.count, step: step, producer: producer,
                payload: UnsafeRawBufferPointer(payload))
        }
        let tryCompress = codec != .raw && codec != .sparseLZ4 && rawBytes > 0 && rawBytes <= Int(LZ4_MAX_INPUT_SIZE)
        let capacity =
            BlobHeader.size + (tryCompress ? max(rawBytes, Int(clz4_compress_bound(Int32(rawBytes)))) : rawBytes)
        var usedCodec = BlobCodec.raw
        var blob = [UInt8](unsafeUninitializedCapacity: capacity) { buf, initialized in
            let out = UnsafeMutableRawBufferPointer(buf)
            var payload = 0
            if tryCompress {
                let dst = out.baseAddress! + BlobHeader.size
                let n = compress(elements, codec: codec, into: dst, capacity: capacity - BlobHeader.size)
                if n > 0 && n < rawBytes {
                    payload = n
                    usedCodec = codec
                }
            }
            if usedCodec == .raw, rawBytes > 0 {
                (out.baseAddress! + BlobHeader.size).copyMemory(from: elements.raw.baseAddress!, byteCount: rawBytes)
                payload = rawBytes
            }
            initialized = BlobHeader.size + payload
        }
        let header = BlobHeader(
            dtype: dtype, codec: usedCodec, count: UInt64(values.count), step: step, producer: producer,
            payloadLength: UInt64(blob.count - BlobHeader.size), checksum: 0)
        blob.withUnsafeMutableBytes { out in
            writeHeader(header, to: out)
            let crc = checksum(UnsafeRawBufferPointer(out))
            storeLE(crc, out, 40)
        }
        return blob
    }

    /// A blob of `payload` with a header of these fields and its checksum.
    static func assemble(
        dtype: DType, codec: BlobCodec, count: Int, step: UInt64, producer: UInt32, payload: UnsafeRawBufferPointer
    ) -> [UInt8] {
        let header = BlobHeader(
            dtype: dtype, codec: codec, count: UInt64(count), step: step, producer: producer,
            payloadLength: UInt64(payload.count), checksum: 0)
        return [UInt8](unsafeUninitializedCapacity: BlobHeader.size + payload.count) { buf, initialized in
            let out = UnsafeMutableRawBufferPointer(buf)
            if payload.count > 0 {
                (out.baseAddress! + BlobHeader.size).copyMemory(from: payload.baseAddress!, byteCount: payload.count)
            }
            writeHeader(header, to: out)
            storeLE(checksum(UnsafeRawBufferPointer(out)), out, 40)
            initialized = out.count
        }
    }

    /// LZ4-compresses the element bytes (shuffled for shuffle-lz4) into `dst`; returns the
    /// compressed length, or 0 when it does not fit in `capacity`.
    static func compress(_ e: ElementBytes, codec: BlobCodec, into dst: UnsafeMutableRawPointer, capacity: Int) -> Int {
        let input =
            switch codec {
            case .shuffleLZ4: e.shuffled
            case .bitshuffleLZ4: e.bitshuffled
            default: e.raw
            }
        return Int(
            clz4_compress_fast(
                input.baseAddress, dst, Int32(input.count), Int32(capacity), e.dtype.lz4Acceleration(for: codec)))
    }

    public static func encode(
        _ values: [Float], dtype: DType = .f32, codec: BlobCodec, step: UInt64, producer: UInt32
    ) -> [UInt8] {
        values.withUnsafeBufferPointer { encode($0, dtype: dtype, codec: codec, step: step, producer: producer) }
    }

    /// Reads and checks the header: magic, version, dtype, codec, sizes and checksum.
    public static func header(
        of blob: UnsafeRawBufferPointer, maxElements: Int = defaultMaxElements
    ) throws(TensorBlobError) -> BlobHeader {
        let header = try parseHeader(blob, blobLength: blob.count, maxElements: maxElements)
        let crc = checksum(blob)
        guard crc == header.checksum else {
            throw TensorBlobError(
                .checksumMismatch, "checksum \(hex(crc)) does not match header's \(hex(header.checksum))")
        }
        return header
    }

    /// Checks a header from the first bytes of a blob of `blobLength` bytes, without the payload
    /// (so without the checksum): for tools that inspect blobs in place.
    public static func header(
        prefix: UnsafeRawBufferPointer, blobLength: Int, maxElements: Int = defaultMaxElements
    ) throws(TensorBlobError) -> BlobHeader {
        try parseHeader(prefix, blobLength: blobLength, maxElements: maxElements)
    }

    static func parseHeader(
        _ blob: UnsafeRawBufferPointer, blobLength: Int, maxElements: Int
    ) throws(TensorBlobError) -> BlobHeader {
        guard blob.count >= BlobHeader.size, blobLength >= BlobHeader.size else {
            throw TensorBlobError(
                .truncated, "\(min(blob.count, blobLength)) bytes is shorter than the \(BlobHeader.size)-byte header")
        }
        guard blob[0] == 0x53, blob[1] == 0x4D, blob[2] == 0x4C, blob[3] == 0x54 else {
            throw TensorBlobError(.badMagic, "magic is not 'SMLT'")
        }
        guard blob[4] == BlobHeader.formatVersion else {
            throw TensorBlobError(.unsupportedVersion, "format version \(blob[4]); this build reads version 1")
        }
        guard let dtype = DType(rawValue: blob[5]) else {
            throw TensorBlobError(.unsupportedDType, "unknown dtype \(blob[5])")
        }
        guard let codec = BlobCodec(rawValue: blob[6]) else {
            throw TensorBlobError(.unknownCodec, "unknown codec \(blob[6])")
        }
        let reserved1: UInt32 = loadLE(blob, 28)
        let reserved2: UInt32 = loadLE(blob, 44)
        guard blob[7] == 0, reserved1 == 0, reserved2 == 0 else {
            throw TensorBlobError(.badHeader, "reserved header bytes are not zero")
        }
        let header = BlobHeader(
            dtype: dtype, codec: codec, count: loadLE(blob, 8), step: loadLE(blob, 16), producer: loadLE(blob, 24),
            payloadLength: loadLE(blob, 32), checksum: loadLE(blob, 40))
        guard header.count <= UInt64(maxElements) else {
            throw TensorBlobError(.tooLarge, "\(header.count) elements exceeds the limit of \(maxElements)")
        }
        guard header.payloadLength == UInt64(blobLength - BlobHeader.size) else {
            throw TensorBlobError(
                .lengthMismatch,
                "header says \(header.payloadLength) payload bytes, blob has \(blobLength - BlobHeader.size)")
        }
        let raw = header.rawByteCount
        switch codec {
        case .raw:
            guard Int(header.payloadLength) == raw else {
                throw TensorBlobError(
                    .lengthMismatch,
                    "raw payload of \(header.payloadLength) bytes for \(header.count) \(dtype) elements (\(raw) bytes)")
            }
        case .sparseLZ4:
            guard header.count <= UInt64(UInt32.max) + 1 else {
                throw TensorBlobError(
                    .tooLarge, "sparse blob of \(header.count) elements: indices are 32-bit, so at most 2^32")
            }
            guard Int(header.payloadLength) >= sparsePrefixSize, Int(header.payloadLength) < raw else {
                throw TensorBlobError(
                    .lengthMismatch,
                    "sparse payload of \(header.payloadLength) bytes for \(header.count) \(dtype) elements (\(raw) bytes); it must be 4 bytes or more and smaller"
                )
            }
        case .lz4, .shuffleLZ4, .bitshuffleLZ4:
            guard header.payloadLength > 0, Int(header.payloadLength) < raw else {
                throw TensorBlobError(
                    .lengthMismatch,
                    "compressed payload of \(header.payloadLength) bytes for \(header.count) \(dtype) elements (\(raw) bytes)"
                )
            }
        }
        return header
    }

    /// Decodes into `destination`, which must hold exactly the blob's element count.
    @discardableResult
    public static func decode(
        _ blob: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>,
        maxElements: Int = defaultMaxElements
    ) throws(TensorBlobError) -> BlobHeader {
        let h = try header(of: blob, maxElements: maxElements)
        guard Int(h.count) == destination.count else {
            throw TensorBlobError(.countMismatch, "blob holds \(h.count) elements, expected \(destination.count)")
        }
        try decodePayload(
            h, payload: UnsafeRawBufferPointer(rebasing: blob[BlobHeader.size...]), into: destination,
            scratch: DecodeScratch())
        return h
    }

    /// Turns a checked blob's payload into f32 values in `destination` (of the blob's count):
    /// LZ4 (into `destination` for f32 lz4, else scratch), then the unshuffle and for f16 and
    /// bf16 the conversion to f32 (from the payload itself when raw).
    static func decodePayload(
        _ h: BlobHeader, payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>,
        scratch: DecodeScratch
    ) throws(TensorBlobError) {
        let raw = h.rawByteCount
        guard raw > 0 else { return }
        if h.codec == .sparseLZ4 {
            return try decodeSparsePayload(h, payload: payload, into: destination, scratch: scratch)
        }
        let dst = UnsafeMutableRawPointer(destination.baseAddress!)
        var elements = payload.baseAddress!
        if h.codec != .raw {
            let out = h.dtype == .f32 && h.codec == .lz4 ? dst : scratch.shuffle(raw).baseAddress!
            let n = clz4_decompress_safe(payload.baseAddress, out, Int32(payload.count), Int32(raw))
            guard n == Int32(raw) else {
                throw TensorBlobError(.corruptPayload, "LZ4 payload does not decode to \(raw) bytes")
            }
            elements = UnsafeRawPointer(out)
        }
        switch (h.dtype, h.codec) {
        // The un-bit-shuffle and, for 2-byte dtypes, the conversion in one pass.
        case (.f32, .bitshuffleLZ4): ctk_bitunshuffle(elements, dst, Int(h.count), 4)
        case (.bf16, .bitshuffleLZ4): ctk_bf16_bitshuffled_to_f32(elements, destination.baseAddress, destination.count)
        case (.f16, .bitshuffleLZ4): ctk_f16_bitshuffled_to_f32(elements, destination.baseAddress, destination.count)
        case (.f32, .shuffleLZ4): ctk_unshuffle(elements, dst, Int(h.count), 4)
        case (.f32, _): if elements != UnsafeRawPointer(dst) { dst.copyMemory(from: elements, byteCount: raw) }
        // The unshuffle and the conversion in one pass.
        case (.bf16, .shuffleLZ4): ctk_bf16_shuffled_to_f32(elements, destination.baseAddress, destination.count)
        case (.f16, .shuffleLZ4): ctk_f16_shuffled_to_f32(elements, destination.baseAddress, destination.count)
        case (_, _): h.dtype.widen(elements, into: destination)
        }
    }

    /// Decodes into a new array.
    public static func decode(
        _ blob: UnsafeRawBufferPointer, maxElements: Int = defaultMaxElements
    ) throws(TensorBlobError) -> (header: BlobHeader, values: [Float]) {
        let h = try header(of: blob, maxElements: maxElements)
        var result: Result<BlobHeader, TensorBlobError> = .success(h)
        let values = [Float](unsafeUninitializedCapacity: Int(h.count)) { buf, n in
            do throws(TensorBlobError) {
                result = .success(try decode(blob, into: buf, maxElements: maxElements))
                n = Int(h.count)
            } catch {
                result = .failure(error)
                n = 0
            }
        }
        return (try result.get(), values)
    }

    public static func decode(_ blob: [UInt8]) throws(TensorBlobError) -> (header: BlobHeader, values: [Float]) {
        let r = blob.withUnsafeBytes { b in Result { () throws(TensorBlobError) in try decode(b) } }
        return try r.get()
    }

    /// CRC-32C over header bytes 0..<40, then the payload.
    static func checksum(_ blob: UnsafeRawBufferPointer) -> UInt32 {
        let c = ctk_crc32c(0, blob.baseAddress, 40)
        return ctk_crc32c(c, blob.baseAddress! + BlobHeader.size, blob.count - BlobHeader.size)
    }

    static func writeHeader(_ h: BlobHeader, to out: UnsafeMutableRawBufferPointer) {
        for (i, b) in BlobHeader.magic.enumerated() { out[i] = b }
        out[4] = BlobHeader.formatVersion
        out[5] = h.dtype.rawValue
        out[6] = h.codec.rawValue
        out[7] = 0
        storeLE(h.count, out, 8)
        storeLE(h.step, out, 16)
        storeLE(h.producer, out, 24)
        storeLE(UInt32(0), out, 28)
        storeLE(h.payloadLength, out, 32)
        storeLE(h.checksum, out, 40)
        storeLE(UInt32(0), out, 44)
    }
}

func storeLE<T: FixedWidthInteger>(_ v: T, _ out: UnsafeMutableRawBufferPointer, _ offset: Int) {
    out.storeBytes(of: v.littleEndian, toByteOffset: offset, as: T.self)
}

func loadLE<T: FixedWidthInteger>(_ b: UnsafeRawBufferPointer, _ offset: Int) -> T {
    T(littleEndian: b.loadUnaligned(fromByteOffset: offset, as: T.self))
}

func hex(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - s.count) + s
}
