#define _GNU_SOURCE
#include "CProcessSpawn.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

_Static_assert(sizeof(pid_t) == 4, "pid_t is imported into Swift as Int32");

/// What the child writes to the pipe when a step before exec fails.
typedef struct failure {
    int stage;
    int error;
} failure;

/// Only async-signal-safe calls from here to execve: the child of a multithreaded process.
static void child_fail(int pipe_fd, int stage) {
    failure f = {stage, errno};
    ssize_t n;
    do {
        n = write(pipe_fd, &f, sizeof f);
    } while (n < 0 && errno == EINTR);
    _exit(127);
}

static void child_redirect(int pipe_fd, int fd, const char *path, int flags, int stage) {
    if (path == NULL) return;
    int opened = open(path, flags, 0644);
    if (opened < 0) child_fail(pipe_fd, stage);
    if (opened != fd) {
        if (dup2(opened, fd) < 0) child_fail(pipe_fd, stage);
        close(opened);
    }
}

/// Marks every descriptor above 2 close-on-exec: nothing but standard input, output and error
/// is inherited, not the sockets to Redis nor a file being written (which the kernel would then
/// refuse to execute: ETXTBSY) that this process opened without O_CLOEXEC.
static void child_close_others_on_exec(void) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
#endif
    struct rlimit limit;
    int last = getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < 65536 ? (int)limit.rlim_cur : 65536;
    for (int fd = 3; fd < last; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/// The child, entered with every signal blocked (the spawner thread blocks them all).
static void child_run(const cprocess_spawn_request *r, int pipe_fd, pid_t parent) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(pipe_fd, CPROCESS_STAGE_PDEATHSIG);
    // The parent may have died before prctl: then no signal comes, and we were re-parented.
    if (getppid() != parent) _exit(127);
    // Its own process group: Ctrl-C on the terminal reaches only the parent, which stops its
    // children in order.
    if (setpgid(0, 0) != 0) child_fail(pipe_fd, CPROCESS_STAGE_SETPGID);
    child_redirect(pipe_fd, 0, r->stdin_path, r->stdin_flags, CPROCESS_STAGE_STDIN);
    child_redirect(pipe_fd, 1, r->stdout_path, r->stdout_flags, CPROCESS_STAGE_STDOUT);
    child_redirect(pipe_fd, 2, r->stderr_path, r->stderr_flags, CPROCESS_STAGE_STDERR);
    if (r->netns_path != NULL) {
        int ns = open(r->netns_path, O_RDONLY | O_CLOEXEC);
        if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) child_fail(pipe_fd, CPROCESS_STAGE_NETNS);
        close(ns);
    }
    child_close_others_on_exec();
    // Handlers inherited from the parent must not run here once signals are unblocked, and
    // ignored signals (the parent ignores SIGINT and SIGTERM while it handles them through
    // Dispatch) would stay ignored across execve: back to the defaults.
    struct sigaction dfl = {0};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction old;
        if (sigaction(sig, NULL, &old) != 0) continue;
        bool reset = sig == SIGINT || sig == SIGTERM || sig == SIGPIPE || sig == SIGCHLD;
        if (reset || (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)) sigaction(sig, &dfl, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(r->path, r->argv, r->envp);
    child_fail(pipe_fd, CPROCESS_STAGE_EXEC);
}

static pid_t fork_child(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    return _Fork(); // no atfork handlers: the child runs only async-signal-safe code
#else
    return fork();
#endif
}

/// Runs on the spawner thread.
static void spawn_now(const cprocess_spawn_request *r, cprocess_spawn_result *out) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        *out = (cprocess_spawn_result){0, errno, CPROCESS_STAGE_PIPE};
        return;
    }
    // Keep the write end off 0-2, which the child redirects.
    if (fds[1] <= 2) {
        int moved = fcntl(fds[1], F_DUPFD_CLOEXEC, 3);
        int error = errno;
        close(fds[1]);
        if (moved < 0) {
            close(fds[0]);
            *out = (cprocess_spawn_result){0, error, CPROCESS_STAGE_PIPE};
            return;
        }
        fds[1] = moved;
    }
    pid_t parent = getpid();
    pid_t pid = fork_child();
    if (pid == 0) {
        close(fds[0]);
        child_run(r, fds[1], parent);
    }
    int fork_error = errno;
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        *out = (cprocess_spawn_result){0, fork_error, CPROCESS_STAGE_FORK};
        return;
    }
    // EOF: execve succeeded and closed the pipe. A record: the child failed and exits.
    failure f = {0, 0};
    ssize_t n;
    do {
        n = read(fds[0], &f, sizeof f);
    } while (n < 0 && errno == EINTR);
    close(fds[0]);
    if (n == (ssize_t)sizeof f) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        *out = (cprocess_spawn_result){0, f.error, f.stage};
        return;
    }
    *out = (cprocess_spawn_result){pid, 0, CPROCESS_STAGE_NONE};
}

// The spawner thread and its one-slot mailbox.
static pthread_mutex_t spawner_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t spawner_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t spawner_done = PTHREAD_COND_INITIALIZER;
/// Callers queue here, so the mailbox holds one request at a time; it also guards the start.
static pthread_mutex_t spawner_callers = PTHREAD_MUTEX_INITIALIZER;
static bool spawner_started = false;
static const cprocess_spawn_request *mailbox_request = NULL;
static cprocess_spawn_result *mailbox_result = NULL;
static bool mailbox_done = false;

static void *spawner_main(void *unused) {
    (void)unused;
    // Signals go to other threads; a child forked here starts with all of them blocked.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    pthread_mutex_lock(&spawner_lock);
    for (;;) {
        while (mailbox_request == NULL) pthread_cond_wait(&spawner_wake, &spawner_lock);
        const cprocess_spawn_request *r = mailbox_request;
        cprocess_spawn_result *out = mailbox_result;
        pthread_mutex_unlock(&spawner_lock);
        spawn_now(r, out);
        pthread_mutex_lock(&spawner_lock);
        mailbox_request = NULL;
        mailbox_done = true;
        pthread_cond_broadcast(&spawner_done);
    }
    return NULL;
}

/// Starts the spawner thread unless it runs; called with spawner_callers held. Returns an errno.
static int spawner_start(void) {
    if (spawner_started) return 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int error = pthread_create(&thread, &attr, spawner_main, NULL);
    pthread_attr_destroy(&attr);
    if (error != 0) return error;
    pthread_setname_np(thread, "cprocess-spawn");
    spawner_started = true;
    return 0;
}

int cprocess_spawn(const cprocess_spawn_request *request, cprocess_spawn_result *result) {
    pthread_mutex_lock(&spawner_callers);
    int error = spawner_start();
    if (error != 0) {
        pthread_mutex_unlock(&spawner_callers);
        *result = (cprocess_spawn_result){0, error, CPROCESS_STAGE_THREAD};
        return error;
    }
    pthread_mutex_lock(&spawner_lock);
    mailbox_request = request;
    mailbox_result = result;
    mailbox_done = false;
    pthread_cond_signal(&spawner_wake);
    while (!mailbox_done) pthread_cond_wait(&spawner_done, &spawner_lock);
    pthread_mutex_unlock(&spawner_lock);
    pthread_mutex_unlock(&spawner_callers);
    return result->error;
}

int cprocess_enter_netns(const char *path) {
    int ns = open(path, O_RDONLY | O_CLOEXEC);
    if (ns < 0) return errno;
    int error = setns(ns, CLONE_NEWNET) == 0 ? 0 : errno;
    close(ns);
    return error;
}

int cprocess_remove_netns(const char *path) {
    // EINVAL: not a mount point (a half-made namespace file); unlink it anyway.
    if (umount2(path, MNT_DETACH) != 0 && errno != EINVAL) return errno;
    return unlink(path) == 0 ? 0 : errno;
}
