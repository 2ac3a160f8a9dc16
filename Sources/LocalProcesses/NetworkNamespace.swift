import CProcessSpawn

#if canImport(Glibc)
    import Glibc
#endif

/// An error setting up, entering or removing network namespaces.
public struct NetworkError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Named network namespaces, as `ip netns` keeps them (a bind-mounted file in /run/netns).
public enum NetworkNamespace {
    /// The directory `ip netns` keeps named namespaces in.
    public static let directory = "/run/netns"

    /// The file of the namespace named `name`.
    public static func path(of name: String) -> String { "\(directory)/\(name)" }

    /// Whether this process may make namespaces, links and qdiscs: it must run as root (with
    /// CAP_SYS_ADMIN and CAP_NET_ADMIN, which root has unless a container took them away).
    public static var isPermitted: Bool { geteuid() == 0 }

    /// Moves the calling thread, and only it, into the namespace named `name`. Sockets it opens
    /// from then on, and threads it starts, are in that namespace; sockets it opened before stay
    /// where they were. Call it first thing on a thread of its own.
    /// - Throws: `NetworkError` when the namespace does not exist or cannot be entered.
    public static func enterOnThisThread(_ name: String) throws(NetworkError) {
        let error = cprocess_enter_netns(path(of: name))
        guard error == 0 else {
            throw NetworkError("cannot enter network namespace \(name): \(String(cString: strerror(error)))")
        }
    }

    /// Removes the namespace named `name` without starting a process (so it also works during a
    /// shutdown, when no child may start): as `ip netns delete`. It ends, with its interfaces,
    /// once no process or thread is in it.
    /// - Throws: `NetworkError` when the file cannot be unmounted or removed.
    public static func remove(_ name: String) throws(NetworkError) {
        let error = cprocess_remove_netns(path(of: name))
        guard error == 0 else {
            throw NetworkError("cannot remove network namespace \(name): \(String(cString: strerror(error)))")
        }
    }

    /// The names of every named namespace (the files in /run/netns), sorted.
    public static func list() -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}
