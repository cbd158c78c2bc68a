/*
 * fc_wire.h - the render server's wire format (docs/hosts-contract.md, "Render server") from C:
 * a Unix socket, messages as a 4-byte little-endian length plus UTF-8 JSON, the frame's pixels in a
 * memfd passed with SCM_RIGHTS on the request's first sendmsg.  Every call takes a deadline so a slow or
 * hung server can never hang the host.
 */
#ifndef FACECOMP_FC_WIRE_H
#define FACECOMP_FC_WIRE_H

#include <stddef.h>

#include "fc_json.h"

#define FC_WIRE_MAX_MESSAGE (1u << 20)

/* Where the server listens: FACECOMP_SERVER_SOCKET, $XDG_RUNTIME_DIR/facecomp/serve.sock or
 * /tmp/facecomp-$UID/serve.sock.  Returns 0 on success. */
int fc_socket_path(char *out, size_t cap);

/* Monotonic clock in seconds. */
double fc_now(void);

/* Connects (no server start).  Returns the fd or -1 with errno set (ENOENT/ECONNREFUSED: no server). */
int fc_connect(const char *path);

/* Sends one message; attach_fd >= 0 travels with it as SCM_RIGHTS.  0 on success, -1 on error/timeout. */
int fc_send(int sock, const char *json, size_t len, int attach_fd, double deadline);

/* Receives one message into a malloc'd NUL-terminated buffer.  0 on success, -1 on error/timeout
 * (errno ETIMEDOUT on timeout, EPIPE when the server closed the connection). */
int fc_recv(int sock, char **out, size_t *len, double deadline);

/* Sends a request and parses the reply.  NULL on transport failure (why gets a static reason, errno is
 * ETIMEDOUT when the deadline passed, EPROTO for a reply that is not a JSON object); `sent` (may be
 * NULL) says whether the whole request left: if not, the server never saw it. */
fc_json *fc_call(int sock, const char *json, size_t len, int attach_fd, double deadline, const char **why,
                 int *sent);

/* An anonymous shared-memory file of `bytes` bytes, mapped read-write; on Linux a memfd sealed with
 * F_SEAL_SHRINK (the server refuses one that could shrink).  Returns the fd or -1. */
int fc_shm_create(size_t bytes, void **map);

/* Finds the facecomp executable: FACECOMP_EXECUTABLE, the path written in the bundle's resources
 * (`resource_file`, may be NULL), then PATH.  0 on success. */
int fc_find_executable(const char *resource_file, char *out, size_t cap);

/* Starts `facecomp serve` detached from the host (its own session, output to `log_path`), then waits
 * until the socket accepts connections or the deadline passes.  0 when the server answers. */
int fc_start_server(const char *exe, const char *sock_path, const char *log_path, double deadline);

#endif
