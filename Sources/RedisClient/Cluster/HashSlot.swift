/// One of a Redis Cluster's 16,384 hash slots: CRC16 (XMODEM) of the key, or of its hash tag,
/// modulo 16,384. A key's hash tag is the part between the first `{` and the first `}` after it,
/// when that part is not empty; keys with the same tag share a slot, so a command or a
/// transaction may touch them together.
public struct HashSlot: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// 0 ..< 16,384.
    public let value: UInt16

    /// The number of slots in a Redis Cluster.
    public static let count = 16_384

    public init?(_ value: Int) {
        guard (0..<Self.count).contains(value) else { return nil }
        self.value = UInt16(value)
    }

    /// The slot of `key` (its bytes, as sent to Redis).
    public init(key: some Collection<UInt8>) {
        let bytes = Array(key)
        var hashed = bytes[...]
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            hashed = bytes[(open + 1)..<close]
        }
        value = Self.crc16(hashed) & UInt16(Self.count - 1)
    }

    /// The slot of a key given as text.
    public init(key: String) { self.init(key: Array(key.utf8)) }

    public var description: String { "\(value)" }

    public static func < (a: HashSlot, b: HashSlot) -> Bool { a.value < b.value }

    /// CRC16-CCITT as Redis Cluster uses it (XMODEM: polynomial 0x1021, initial value 0, no
    /// reflection, no final XOR).
    static func crc16(_ bytes: some Collection<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for b in bytes { crc = (crc << 8) ^ table[Int((crc >> 8) ^ UInt16(b))] }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { i in
        var c = UInt16(i) << 8
        for _ in 0..<8 { c = c & 0x8000 != 0 ? (c << 1) ^ 0x1021 : c << 1 }
        return c
    }
}
