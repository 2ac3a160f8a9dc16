import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Network namespaces joined by one bridge, each behind a link of its own with a `tc tbf` rate
/// limit in both directions: a local stand-in for a cloud network, where every function and every
/// storage node has its own bandwidth.
///
/// The bridge `br0` lives in a namespace of its own (`PREFIX-br`, address `10.213.0.1/16`). Each
/// host (`PREFIX-HOST`) has a veth pair: `eth0` inside the host, `HOST` on the bridge. The egress
/// of `eth0` (what the host sends) and of `HOST` (what it receives) each get a token bucket of
/// `rate`. Addresses are in 10.213.0.0/16 (`layout.address(of:)`). Nothing is added to the
/// namespace this process runs in, so runs side by side (each with its own prefix) cannot
/// collide, and removing the namespaces removes every interface and qdisc with them.
///
/// Making it needs root (`NetworkNamespace.isPermitted`) and the `ip` and `tc` commands
/// (iproute2). Stop the processes running in the namespaces before `remove()` (also run on
/// deinit, and on SIGINT or SIGTERM through `ChildRegistry`'s cleanups, after the children
/// stopped): a namespace lasts as long as something is in it.
public final class RateLimitedNetwork: Sendable {
    /// The names and addresses of a network; the same prefix and hosts give the same layout, so
    /// a process started inside it can rebuild it from them.
    public struct Layout: Sendable, Hashable {
        /// Every namespace's name starts with it: `smltnet-PID-RANDOM`.
        public let prefix: String
        public let hosts: [String]

        /// The namespace names of networks made by this library start with it.
        public static let namePrefix = "smltnet-"
        /// The bridge's address; hosts reach one another, and the bridge's namespace reaches them.
        public static let bridgeAddress = "10.213.0.1"

        /// - Throws: `NetworkError` when a host name is not 1-15 letters and digits (it names the
        ///   bridge's end of its link) or appears twice.
        public init(prefix: String, hosts: [String]) throws(NetworkError) {
            for h in hosts {
                guard !h.isEmpty, h.count <= 15, h != "br", h.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) })
                else {
                    throw NetworkError("host name '\(h)' must be 1 to 15 letters and digits, and not 'br'")
                }
            }
            guard Set(hosts).count == hosts.count else { throw NetworkError("host names repeat: \(hosts)") }
            guard hosts.count <= 250 * 250 else { throw NetworkError("at most 62,500 hosts, not \(hosts.count)") }
            self.prefix = prefix
            self.hosts = hosts
        }

        /// The namespace of the bridge.
        public var bridgeNamespace: String { "\(prefix)-br" }

        /// The namespace of `host`.
        public func namespace(of host: String) -> String { "\(prefix)-\(host)" }

        /// The IPv4 address of `host` (in 10.213.0.0/16), by its place in `hosts`.
        public func address(of host: String) -> String {
            let i = hosts.firstIndex(of: host)!
            return "10.213.\(1 + i / 250).\(2 + i % 250)"
        }

        /// Every namespace of the network, the bridge's last.
        public var namespaces: [String] { hosts.map(namespace(of:)) + [bridgeNamespace] }
    }

    public let layout: Layout
    public let rate: LinkRate
    private let removed = Atomic<Bool>(false)
    private let cleanupToken: Int

    /// A prefix no other run uses: this process's id and a random number.
    public static func newPrefix() -> String {
        "\(Layout.namePrefix)\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    }

    /// Makes the namespaces, the bridge and the rate-limited links. On failure removes what it
    /// made and throws.
    /// - Parameters:
    ///   - hosts: one namespace each, named `PREFIX-HOST`.
    ///   - rate: the rate of each link, in each direction.
    /// - Throws: `NetworkError` when this process is not root, or an `ip` or `tc` command fails
    ///   (the error gives the command and its output).
    public init(hosts: [String], rate: LinkRate, prefix: String = RateLimitedNetwork.newPrefix()) throws(NetworkError) {
        guard NetworkNamespace.isPermitted else {
            throw NetworkError("network namespaces and tc need root (this process runs as uid \(geteuid()))")
        }
        let layout = try Layout(prefix: prefix, hosts: hosts)
        self.layout = layout
        self.rate = rate
        cleanupToken = ChildRegistry.addCleanup { Self.remove(layout) }
        do throws(NetworkError) {
            try build()
        } catch {
            remove()
            throw error
        }
    }

    deinit { remove() }

    /// The token bucket of one direction of a link: `rate`, a burst of at least 128 KiB (two of
    /// the 64 KiB segments GSO hands down) or 1 ms at the rate, and packets queued for at most
    /// 50 ms.
    private var tbf: [String] {
        let burst = max(128 << 10, Int(rate.bytesPerSecond / 1000))
        return ["root", "tbf", "rate", "\(rate.bitsPerSecond)bit", "burst", "\(burst)", "latency", "50ms"]
    }

    private func build() throws(NetworkError) {
        let br = layout.bridgeNamespace
        let log = NSTemporaryDirectory() + "\(layout.prefix)-ip.log"
        defer { unlink(log) }
        func run(_ command: String, _ args: [String]) throws(NetworkError) {
            try Self.run([command] + args, log: log)
        }
        try run("ip", ["netns", "add", br])
        try run("ip", ["-n", br, "link", "set", "dev", "lo", "up"])
        try run("ip", ["-n", br, "link", "add", "name", "br0", "type", "bridge"])
        try run("ip", ["-n", br, "addr", "add", "\(Layout.bridgeAddress)/16", "dev", "br0"])
        try run("ip", ["-n", br, "link", "set", "dev", "br0", "up"])
        for host in layout.hosts {
            let ns = layout.namespace(of: host)
            try run("ip", ["netns", "add", ns])
            try run("ip", ["-n", br, "link", "add", "name", host, "type", "veth", "peer", "name", "eth0", "netns", ns])
            try run("ip", ["-n", br, "link", "set", "dev", host, "master", "br0", "up"])
            try run("ip", ["-n", ns, "link", "set", "dev", "lo", "up"])
            try run("ip", ["-n", ns, "addr", "add", "\(layout.address(of: host))/16", "dev", "eth0"])
            try run("ip", ["-n", ns, "link", "set", "dev", "eth0", "up"])
            try run("tc", ["-n", ns, "qdisc", "add", "dev", "eth0"] + tbf)
            try run("tc", ["-n", br, "qdisc", "add", "dev", host] + tbf)
        }
    }

    /// Runs one command to its end; its output goes to `log`, quoted in the error if it fails.
    private static func run(_ args: [String], log: String) throws(NetworkError) {
        unlink(log)
        let line = args.joined(separator: " ")
        let p: ChildProcess
        do {
            p = try ChildProcess(args[0], arguments: Array(args.dropFirst()), stdout: .file(log), stderr: .file(log))
        } catch {
            throw NetworkError("\(line): \(error)")
        }
        let status = p.wait(timeout: .seconds(30)) ?? p.terminate(grace: .seconds(1))
        guard status.succeeded else {
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw NetworkError(
                "`\(line)` failed (\(status)): \(output.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// Removes every namespace of the network (and so its links and qdiscs); the second call does
    /// nothing. Failures other than a namespace already gone are reported on standard error.
    public func remove() {
        guard !removed.exchange(true, ordering: .relaxed) else { return }
        ChildRegistry.removeCleanup(cleanupToken)
        Self.remove(layout)
    }

    private static func remove(_ layout: Layout) {
        let existing = Set(NetworkNamespace.list())
        for ns in layout.namespaces where existing.contains(ns) {
            do throws(NetworkError) { try NetworkNamespace.remove(ns) } catch {
                FileHandle.standardError.write(Data("warning: \(error)\n".utf8))
            }
        }
    }

    /// Removes the namespaces of networks this library made in processes that are gone: a name
    /// `smltnet-PID-…` whose process no longer exists and with no process inside (`ip netns
    /// pids`). Others, in use or of a live process, are left alone.
    /// - Returns: the namespaces removed.
    @discardableResult
    public static func removeStale() -> [String] {
        var removed: [String] = []
        for name in NetworkNamespace.list() where name.hasPrefix(Layout.namePrefix) {
            let rest = name.dropFirst(Layout.namePrefix.count)
            guard let pid = rest.split(separator: "-").first.flatMap({ pid_t($0) }), pid > 0,
                kill(pid, 0) != 0, errno == ESRCH
            else { continue }
            let log = NSTemporaryDirectory() + "smltnet-pids-\(getpid())"
            defer { unlink(log) }
            guard (try? run(["ip", "netns", "pids", name], log: log)) != nil,
                (try? String(contentsOfFile: log, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                    .isEmpty == true
            else { continue }
            if (try? NetworkNamespace.remove(name)) != nil { removed.append(name) }
        }
        return removed
    }
}
