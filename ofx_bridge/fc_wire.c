/* fc_wire.c - see fc_wire.h.  Linux (memfd) and other POSIX systems (unlinked shm_open). */
#define _GNU_SOURCE
#include "fc_wire.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* macOS has no MSG_NOSIGNAL: there the socket itself is set not to raise SIGPIPE (SO_NOSIGPIPE) */
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

double fc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int fc_socket_path(char *out, size_t cap) {
    const char *env = getenv("FACECOMP_SERVER_SOCKET");
    int n;
    if (env && *env) n = snprintf(out, cap, "%s", env);
    else if ((env = getenv("XDG_RUNTIME_DIR")) && *env && is_dir(env)) n = snprintf(out, cap, "%s/facecomp/serve.sock", env);
    else n = snprintf(out, cap, "/tmp/facecomp-%u/serve.sock", (unsigned)getuid());
    return (n > 0 && (size_t)n < cap) ? 0 : -1;
}

int fc_connect(const char *path) {
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) { errno = ENAMETOOLONG; return -1; }
    strcpy(addr.sun_path, path);
#ifdef SOCK_CLOEXEC
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
#else
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    if (fd < 0) return -1;
#ifdef SO_NOSIGPIPE
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    /* A server that stopped accepting leaves a full listen queue, where a plain connect() waits forever;
       Linux bounds a Unix-socket connect by the send timeout, so a host thread never hangs here. */
    struct timeval bound = {2, 0}, none = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof bound);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(fd);
        errno = (e == EAGAIN || e == EWOULDBLOCK) ? ETIMEDOUT : e;
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none); /* sends poll with their own deadline */
    return fd;
}

/* Waits until `fd` is ready for `events` or the deadline passes. */
static int wait_fd(int fd, short events, double deadline) {
    for (;;) {
        double left = deadline - fc_now();
        if (left <= 0) { errno = ETIMEDOUT; return -1; }
        struct pollfd p = {fd, events, 0};
        int ms = left > 3600 ? 3600000 : (int)(left * 1000) + 1;
        int r = poll(&p, 1, ms);
        if (r > 0) {
            if (p.revents & (POLLERR | POLLNVAL)) { errno = EPIPE; return -1; }
            return 0;
        }
        if (r < 0 && errno != EINTR) return -1;
    }
}

int fc_send(int sock, const char *json, size_t len, int attach_fd, double deadline) {
    if (len > FC_WIRE_MAX_MESSAGE) { errno = EMSGSIZE; return -1; }
    unsigned char head[4] = {(unsigned char)(len & 0xFF), (unsigned char)((len >> 8) & 0xFF),
                             (unsigned char)((len >> 16) & 0xFF), (unsigned char)((len >> 24) & 0xFF)};
    size_t total = 4 + len, sent = 0;
    int first = 1;
    while (sent < total) {
        if (wait_fd(sock, POLLOUT, deadline) != 0) return -1;
        struct iovec iov[2];
        int n_iov = 0;
        if (sent < 4) {
            iov[n_iov].iov_base = head + sent;
            iov[n_iov++].iov_len = 4 - sent;
            iov[n_iov].iov_base = (void *)json;
            iov[n_iov++].iov_len = len;
        } else {
            iov[n_iov].iov_base = (void *)(json + (sent - 4));
            iov[n_iov++].iov_len = total - sent;
        }
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)n_iov;
        union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl;
        if (first && attach_fd >= 0) {
            memset(&ctl, 0, sizeof ctl);
            msg.msg_control = ctl.buf;
            msg.msg_controllen = sizeof ctl.buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &attach_fd, sizeof(int));
        }
        ssize_t w = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
            return -1;
        }
        first = 0;
        sent += (size_t)w;
    }
    return 0;
}

static int recv_exact(int sock, void *dst, size_t n, double deadline) {
    size_t got = 0;
    while (got < n) {
        if (wait_fd(sock, POLLIN, deadline) != 0) return -1;
        ssize_t r = recv(sock, (char *)dst + got, n - got, MSG_DONTWAIT);
        if (r == 0) { errno = EPIPE; return -1; }
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

int fc_recv(int sock, char **out, size_t *len, double deadline) {
    unsigned char head[4];
    *out = NULL;
    if (recv_exact(sock, head, 4, deadline) != 0) return -1;
    uint32_t n = (uint32_t)head[0] | ((uint32_t)head[1] << 8) | ((uint32_t)head[2] << 16) | ((uint32_t)head[3] << 24);
    if (n > FC_WIRE_MAX_MESSAGE) { errno = EMSGSIZE; return -1; }
    char *buf = malloc((size_t)n + 1);
    if (!buf) { errno = ENOMEM; return -1; }
    if (recv_exact(sock, buf, n, deadline) != 0) { free(buf); return -1; }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return 0;
}

fc_json *fc_call(int sock, const char *json, size_t len, int attach_fd, double deadline, const char **why,
                 int *sent) {
    if (sent) *sent = 0;
    if (fc_send(sock, json, len, attach_fd, deadline) != 0) {
        *why = errno == ETIMEDOUT ? "timed out sending the request" : "the server closed the connection";
        return NULL;
    }
    if (sent) *sent = 1;
    char *reply = NULL;
    size_t n = 0;
    if (fc_recv(sock, &reply, &n, deadline) != 0) {
        *why = errno == ETIMEDOUT ? "timed out waiting for the server" : "the server closed the connection";
        return NULL;
    }
    const char *err = NULL;
    fc_json *v = fc_json_parse(reply, n, &err);
    free(reply);
    if (!v || v->type != FC_JOBJ) {
        fc_json_free(v);
        *why = "the server's reply was not a JSON object";
        errno = EPROTO;
        return NULL;
    }
    return v;
}

int fc_shm_create(size_t bytes, void **map) {
    int fd = -1;
#if defined(__linux__)
    /* sealable: the server refuses a memfd that could shrink under its mapping (protocol 2) */
    fd = memfd_create("facecomp-frame", MFD_CLOEXEC | MFD_ALLOW_SEALING);
#else
    char name[64];
    for (int i = 0; i < 16 && fd < 0; i++) {
        snprintf(name, sizeof name, "/facecomp-%d-%lx-%d", (int)getpid(), (unsigned long)fc_now(), i);
        fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0) shm_unlink(name);
    }
#endif
    if (fd < 0) return -1;
    void *p;
    int e;
    if (ftruncate(fd, (off_t)bytes) != 0) goto fail;
#if defined(__linux__)
    /* sized once, never shrunk: this memory is reused only for frames of exactly this size */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) goto fail;
#endif
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) goto fail;
    *map = p;
    return fd;
fail:
    e = errno; /* the caller reports why */
    close(fd);
    errno = e;
    return -1;
}

static int is_executable(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int fc_find_executable(const char *resource_file, char *out, size_t cap) {
    const char *env = getenv("FACECOMP_EXECUTABLE");
    if (env && *env && is_executable(env) && strlen(env) < cap) { strcpy(out, env); return 0; }
    if (resource_file) {
        FILE *f = fopen(resource_file, "r");
        if (f) {
            char line[4096];
            if (fgets(line, sizeof line, f)) {
                line[strcspn(line, "\r\n")] = 0;
                if (*line && is_executable(line) && strlen(line) < cap) { strcpy(out, line); fclose(f); return 0; }
            }
            fclose(f);
        }
    }
    const char *path = getenv("PATH");
    if (!path) return -1;
    const char *p = path;
    while (*p) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        char cand[4096];
        if (n > 0 && n + 10 < sizeof cand) {
            memcpy(cand, p, n);
            strcpy(cand + n, "/facecomp");
            if (is_executable(cand) && strlen(cand) < cap) { strcpy(out, cand); return 0; }
        }
        p += n;
        if (*p == ':') p++;
    }
    return -1;
}

static int mkdir_private(const char *sock_path) {
    char dir[4096];
    if (strlen(sock_path) >= sizeof dir) return -1;
    strcpy(dir, sock_path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = 0;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return -1;
    return 0;
}

/* Whether process `pid` (not our child) still runs: gone, or a zombie nobody reaped yet, is not. */
static int process_alive(pid_t pid) {
    if (pid <= 0) return 1; /* unknown: rely on the deadline */
    if (kill(pid, 0) != 0 && errno == ESRCH) return 0;
#if defined(__linux__)
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *paren = strrchr(buf, ')');
        if (paren && paren[1] == ' ' && paren[2] == 'Z') return 0;
    }
#endif
    return 1;
}

int fc_start_server(const char *exe, const char *sock_path, const char *log_path, double deadline) {
    /* Everything the child needs is prepared before fork: after fork in a threaded host only
     * async-signal-safe calls are allowed until exec. */
    mkdir_private(sock_path);
    char *argv[] = {(char *)exe, (char *)"serve", NULL};
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int pipe_fd[2] = {-1, -1};
    /* close-on-exec: a program another host thread starts meanwhile must not hold the pipe open */
    if (pipe(pipe_fd) != 0) pipe_fd[0] = pipe_fd[1] = -1;
    else { fcntl(pipe_fd[0], F_SETFD, FD_CLOEXEC); fcntl(pipe_fd[1], F_SETFD, FD_CLOEXEC); }
    long max_fd = sysconf(_SC_OPEN_MAX);
    if (max_fd < 0 || max_fd > 65536) max_fd = 65536;
    pid_t pid = fork();
    if (pid < 0) {
        if (log_fd >= 0) close(log_fd);
        if (null_fd >= 0) close(null_fd);
        if (pipe_fd[0] >= 0) { close(pipe_fd[0]); close(pipe_fd[1]); }
        return -1;
    }
    if (pid == 0) {
        /* first child: make a grandchild in its own session so the host never has to reap it, and
         * tell the parent the grandchild's pid */
        pid_t g = fork();
        if (g != 0) {
            if (g > 0 && pipe_fd[1] >= 0) { ssize_t w = write(pipe_fd[1], &g, sizeof g); (void)w; }
            _exit(g < 0 ? 1 : 0);
        }
        setsid();
        dup2(null_fd >= 0 ? null_fd : 0, 0);
        if (log_fd >= 0) { dup2(log_fd, 1); dup2(log_fd, 2); }
        /* the server must not keep the host's files and sockets open */
        for (long fd = 3; fd < max_fd; fd++) close((int)fd);
        execv(exe, argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    pid_t server_pid = -1;
    if (pipe_fd[0] >= 0) {
        close(pipe_fd[1]);
        if (read(pipe_fd[0], &server_pid, sizeof server_pid) != (ssize_t)sizeof server_pid) server_pid = -1;
        close(pipe_fd[0]);
    }
    if (log_fd >= 0) close(log_fd);
    if (null_fd >= 0) close(null_fd);
    while (fc_now() < deadline) {
        int fd = fc_connect(sock_path);
        if (fd >= 0) { close(fd); return 0; }
        if (!process_alive(server_pid)) { errno = ECHILD; return -1; } /* it exited while starting */
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    errno = ETIMEDOUT;
    return -1;
}
