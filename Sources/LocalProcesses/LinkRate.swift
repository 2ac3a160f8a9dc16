/// The rate of a network link in bits per second, written as `tc` writes rates: a decimal
/// number and `bit`, `kbit`, `mbit`, `gbit` or `tbit` (powers of 1,000), as in `100mbit`,
/// `1gbit` or `2.5gbit`.
public struct LinkRate: Hashable, Sendable, CustomStringConvertible {
    /// Bits per second.
    public let bitsPerSecond: Int
    /// How it was written, lowercased (`1gbit`).
    public let text: String

    /// The slowest rate accepted: slower links would make a benchmark step take minutes.
    public static let minimum = 1_000_000
    /// The fastest: far above any loopback this machine reaches, and within tc's 64-bit rates.
    public static let maximum = 10_000_000_000_000

    private static let units: [(suffix: String, factor: Double)] = [
        ("tbit", 1e12), ("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1),
    ]

    /// Parses a rate such as `100mbit`, `1gbit` or `2.5gbit` (case-insensitive).
    /// - Parameter flag: the option the text came from, named in the error.
    /// - Throws: `NetworkError` naming `flag` when the text is not a rate or is outside
    ///   `minimum`...`maximum`.
    public init(parsing text: String, flag: String = "--link-rate") throws(NetworkError) {
        let t = text.lowercased()
        let example = "a number and bit, kbit, mbit, gbit or tbit, as in 100mbit, 1gbit or 2.5gbit"
        guard let unit = Self.units.first(where: { t.hasSuffix($0.suffix) }),
            let number = Double(t.dropLast(unit.suffix.count)), number.isFinite, number > 0,
            !t.hasPrefix("+")
        else {
            throw NetworkError("\(flag): '\(text)' is not a rate; write \(example)")
        }
        let bits = number * unit.factor
        guard bits >= Double(Self.minimum), bits <= Double(Self.maximum) else {
            throw NetworkError("\(flag): \(text) is outside 1mbit...10tbit")
        }
        bitsPerSecond = Int(bits.rounded())
        self.text = t
    }

    /// Bytes per second.
    public var bytesPerSecond: Double { Double(bitsPerSecond) / 8 }

    public var description: String { text }
}
