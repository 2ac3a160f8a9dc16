#ifndef CPROCESSSPAWN_H
#define CPROCESSSPAWN_H
#include <sys/types.h>

/// What a failed `cprocess_spawn` was doing when it failed (`cprocess_spawn_result.stage`).
enum {
    CPROCESS_STAGE_NONE = 0,
    /// Starting the spawner thread.
    CPROCESS_STAGE_THREAD = 1,
    /// Creating the pipe that reports failures in the child.
    CPROCESS_STAGE_PIPE = 2,
    CPROCESS_STAGE_FORK = 3,
    /// prctl(PR_SET_PDEATHSIG) in the child.
    CPROCESS_STAGE_PDEATHSIG = 4,
    /// setpgid(0, 0) in the child.
    CPROCESS_STAGE_SETPGID = 5,
    /// Opening the file for standard input, output or error in the child.
    CPROCESS_STAGE_STDIN = 6,
    CPROCESS_STAGE_STDOUT = 7,
    CPROCESS_STAGE_STDERR = 8,
    CPROCESS_STAGE_EXEC = 9,
    /// Opening the network namespace file or setns(2) into it, in the child.
    CPROCESS_STAGE_NETNS = 10,
};

/// One process to start. Every pointer must stay valid until `cprocess_spawn` returns.
typedef struct cprocess_spawn_request {
    /// The executable's path, passed to execve as is (no PATH lookup).
    const char *path;
    /// NULL-terminated argument and environment vectors.
    char *const *argv;
    char *const *envp;
    /// Files opened (with the matching flags, mode 0644) as standard input, output and error;
    /// NULL keeps the parent's.
    const char *stdin_path;
    int stdin_flags;
    const char *stdout_path;
    int stdout_flags;
    const char *stderr_path;
    int stderr_flags;
    /// A network namespace file (as /run/netns/NAME) the child enters before exec; NULL keeps
    /// the spawner thread's.
    const char *netns_path;
} cprocess_spawn_request;

typedef struct cprocess_spawn_result {
    /// The child's pid on success.
    pid_t pid;
    /// The errno of the failed step, or 0.
    int error;
    /// A CPROCESS_STAGE_* value: which step failed.
    int stage;
} cprocess_spawn_result;

/// Starts a child with fork and execve that is SIGKILLed when this process dies, however it dies.
///
/// The child gets PR_SET_PDEATHSIG(SIGKILL), its own process group, the redirections asked for,
/// no other descriptor (all above 2 are closed at execve), an empty signal mask and default
/// dispositions, then execs.
///
/// The kernel sends the parent-death signal when the *thread* that forked exits, not the
/// process, so every child is forked by one spawner thread that lives as long as the process;
/// callers from any thread hand their request to it and wait. A failure in the child (a redirection, execve) is reported back through a
/// close-on-exec pipe, and that child is reaped here.
///
/// Returns 0 with `result->pid` set, or the errno with `result->stage` saying which step failed.
int cprocess_spawn(const cprocess_spawn_request *request, cprocess_spawn_result *result);

/// Moves the calling thread (only it: the network namespace is per thread) into the network
/// namespace of the file at `path` (as /run/netns/NAME or /proc/thread-self/ns/net). Sockets it
/// opens afterwards, and threads it starts, belong to that namespace; sockets opened before
/// keep theirs. Returns 0 or the errno of open(2) or setns(2).
int cprocess_enter_netns(const char *path);

/// Removes a named network namespace as `ip netns delete` does: detaches the bind mount at
/// `path` (/run/netns/NAME) and unlinks the file. The namespace itself ends when nothing uses it
/// any more (no process or thread in it, no open file of it), and its interfaces with it (a veth
/// pair goes when either end goes). Starts no process, so it also works while shutting down.
/// Returns 0 or the errno of umount2(2) or unlink(2).
int cprocess_remove_netns(const char *path);
#endif
