import ArgumentParser
import Foundation
import TensorBlob

extension AdminCommand {
    /// Blobs as files, without Redis: to inspect a stored value or to check another client's
    /// encoder against SMLT's.
    struct Blob: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Encode f32 values into a tensor blob file, or decode one (no Redis involved).",
            subcommands: [Encode.self, Decode.self])

        struct Encode: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Encode a file of little-endian f32 values as a blob.",
                discussion: """
                    bf16 and f16 round each value to nearest even (docs/wire-format.md). With --codec topk:FRACTION \
                    the blob is the sparse-lz4 blob of the ceil(FRACTION × n) values of largest magnitude, as a \
                    worker pushes it.
                    """)

            @Option(help: "The f32 values (little-endian, 4 bytes each).") var input: String
            @Option(help: "The blob file to write.") var output: String
            @Option(help: "f32, f16 or bf16 (default: the --codec spec's, else f32).") var dtype: String?
            @Option(
                help:
                    "raw, lz4, shuffle-lz4, bitshuffle-lz4, sparse-lz4 or topk:FRACTION, optionally after DTYPE- (bf16-bitshuffle-lz4)."
            )
            var codec = "raw"
            @Option(help: "The header's step.") var step: UInt64 = 0
            @Option(help: "The header's producer.") var producer: UInt32 = 0

            func run() throws {
                var encoding: GradientEncoding
                do { encoding = try GradientEncoding(parsing: codec) } catch {
                    throw ValidationError(error.message)
                }
                if let dtype {
                    guard let d = DType(name: dtype) else {
                        throw ValidationError("unknown dtype '\(dtype)' (f32, f16, bf16)")
                    }
                    guard encoding.dtype == .f32 || encoding.dtype == d else {
                        throw ValidationError("--dtype \(d) disagrees with --codec \(codec)")
                    }
                    encoding = encoding.with(dtype: d)
                }
                let bytes = try Data(contentsOf: URL(fileURLWithPath: input))
                guard bytes.count % 4 == 0 else {
                    throw ValidationError("\(input) holds \(bytes.count) bytes, not a whole number of f32 values")
                }
                let values = bytes.withUnsafeBytes { raw in
                    (0..<(bytes.count / 4)).map {
                        Float(
                            bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))
                        )
                    }
                }
                let blob = values.withUnsafeBufferPointer { encoding.encode($0, step: step, producer: producer) }
                try Data(blob).write(to: URL(fileURLWithPath: output))
            }
        }

        struct Decode: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Check and decode a blob file; print its header as JSON.",
                discussion: "Exits 1 with the decoder's message when the blob is invalid.")

            @Option(help: "The blob file.") var input: String
            @Option(help: "Where to write the decoded values as little-endian f32 (optional).") var output: String?

            struct HeaderJSON: Encodable {
                var dtype: String
                var codec: String
                var count: UInt64
                var step: UInt64
                var producer: UInt32
                var payloadLength: UInt64
                enum CodingKeys: String, CodingKey {
                    case dtype, codec, count, step, producer
                    case payloadLength = "payload_length"
                }
            }

            func run() throws {
                let blob = [UInt8](try Data(contentsOf: URL(fileURLWithPath: input)))
                let decoded: (header: BlobHeader, values: [Float])
                do { decoded = try TensorBlob.decode(blob) } catch {
                    printError("\(input): \(error)")
                    throw ExitCode(1)
                }
                let h = decoded.header
                if let output {
                    let le = decoded.values.map { $0.bitPattern.littleEndian }
                    try le.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: output)) }
                }
                try printJSON(
                    HeaderJSON(
                        dtype: "\(h.dtype)", codec: "\(h.codec)", count: h.count, step: h.step, producer: h.producer,
                        payloadLength: h.payloadLength))
            }
        }
    }
}
