import Foundation

/// The safetensors file format (as read by `safetensors.torch.load_file` and
/// `safetensors.numpy.load_file`): an 8-byte little-endian header length, a JSON header naming
/// each tensor's dtype, shape and byte range, then the raw little-endian data. SMLT writes and
/// reads f32 tensors only.
public enum SafeTensors {
    public struct Tensor: Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var values: [Float]

        public init(name: String, shape: [Int], values: [Float]) {
            self.name = name
            self.shape = shape
            self.values = values
        }
    }

    /// The largest header accepted when reading (the format's own limit is 100 MB).
    static let maxHeader = 100_000_000

    /// Encodes tensors and string metadata.
    public static func encode(_ tensors: [Tensor], metadata: [String: String]) throws(CheckpointError) -> [UInt8] {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        for t in tensors {
            guard t.shape.reduce(1, *) == t.values.count else {
                throw CheckpointError(.invalid, "tensor '\(t.name)' has shape \(t.shape) but \(t.values.count) values")
            }
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + t.values.count * 4]]
            offset += t.values.count * 4
        }
        var json: [UInt8]
        do { json = Array(try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])) } catch {
            throw CheckpointError(.invalid, "cannot encode the header: \(error)")
        }
        // Pad the header with spaces so the data starts 8-byte aligned.
        while json.count % 8 != 0 { json.append(0x20) }
        var out = [UInt8]()
        out.reserveCapacity(8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out += $0 }
        out += json
        for t in tensors {
            t.values.withUnsafeBytes { raw in
                // f32 values are stored little-endian, as on every platform SMLT runs on.
                out += raw
            }
        }
        return out
    }

    /// Decodes a file's bytes: its tensors in data order, and its metadata. Every size and offset
    /// is checked before use.
    public static func decode(_ bytes: [UInt8]) throws(CheckpointError) -> (
        tensors: [Tensor], metadata: [String: String]
    ) {
        guard bytes.count >= 8 else {
            throw CheckpointError(.corrupt, "\(bytes.count) bytes is too short for a header")
        }
        let n = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n <= UInt64(maxHeader), Int(n) <= bytes.count - 8 else {
            throw CheckpointError(.corrupt, "header length \(n) does not fit the file of \(bytes.count) bytes")
        }
        let data = bytes[(8 + Int(n))...]
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + Int(n))])) } catch {
            throw CheckpointError(.corrupt, "header is not JSON: \(error)")
        }
        guard let header = object as? [String: Any] else {
            throw CheckpointError(.corrupt, "header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var tensors: [(Int, Tensor)] = []
        for (name, value) in header {
            if name == "__metadata__" {
                guard let m = value as? [String: String] else {
                    throw CheckpointError(.corrupt, "__metadata__ must map strings to strings")
                }
                metadata = m
                continue
            }
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2
            else { throw CheckpointError(.corrupt, "tensor '\(name)' has no valid dtype, shape and data_offsets") }
            guard dtype == "F32" else {
                throw CheckpointError(.unsupported, "tensor '\(name)' is \(dtype); SMLT reads F32")
            }
            guard shape.allSatisfy({ $0 >= 0 && $0 <= 1 << 34 }) else {
                throw CheckpointError(.corrupt, "tensor '\(name)' has an invalid shape \(shape)")
            }
            let (count, overflow) = shape.reduce((1, false)) { acc, d in
                let (m, o) = acc.0.multipliedReportingOverflow(by: d)
                return (m, acc.1 || o)
            }
            let (begin, end) = (offsets[0], offsets[1])
            guard !overflow, begin >= 0, end >= begin, end <= data.count, end - begin == count * 4 else {
                throw CheckpointError(
                    .corrupt,
                    "tensor '\(name)': bytes \(begin)..<\(end) do not hold shape \(shape) in \(data.count) bytes")
            }
            let values = [Float](unsafeUninitializedCapacity: count) { buf, initialized in
                data.withUnsafeBytes { raw in
                    UnsafeMutableRawBufferPointer(buf).copyMemory(
                        from: UnsafeRawBufferPointer(rebasing: raw[begin..<end]))
                }
                initialized = count
            }
            tensors.append((begin, Tensor(name: name, shape: shape, values: values)))
        }
        return (tensors.sorted { $0.0 < $1.0 }.map(\.1), metadata)
    }
}
