/* The transport floor of the sidecar's HTTP benchmark: a Unix-socket server that answers every request head
 * ("\r\n\r\n"-terminated, no body) with a fixed response of a given size, doing nothing else. One epoll
 * loop, one read and one write per ready connection: what the kernel costs a server per request at that
 * depth, whatever the server does. Built and run by benches/bench_sidecar.py (scenario floor-http).
 *
 *     cc -O2 -o http_floor http_floor.c && ./http_floor SOCKET RESPONSE_BYTES
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAXC 4096

static size_t carry[MAXC];   /* per fd: how many bytes of "\r\n\r\n" the last read ended with */

/* Request heads in p[0..n), "\r\n\r\n" possibly split across reads: a terminator begun in the last read
 * is finished byte by byte (at most 3 bytes), the rest found with memmem (a byte-at-a-time state machine
 * over a 1.5 KB head costs more than a microsecond, which is not the kernel's share). */
static size_t heads(int fd, const char *p, size_t n)
{
    static const char end[] = "\r\n\r\n";
    size_t k = carry[fd], count = 0, i = 0;
    for (; k && i < n; i++) {
        k = p[i] == end[k] ? k + 1 : (p[i] == '\r' ? 1 : 0);
        if (k == 4) {
            count++;
            k = 0;
        }
    }
    if (k) {             /* the whole read continued a terminator and did not finish it */
        carry[fd] = k;
        return count;
    }
    for (const char *q; (q = memmem(p + i, n - i, end, 4)) != NULL; i = (size_t)(q - p) + 4)
        count++;
    for (size_t j = n - i > 3 ? n - 3 : i; j < n; j++)
        k = p[j] == end[k] ? k + 1 : (p[j] == '\r' ? 1 : 0);
    carry[fd] = k;
    return count;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SOCKET RESPONSE_BYTES\n", argv[0]);
        return 2;
    }
    size_t rsize = (size_t)atol(argv[2]);
    static const char status[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: ";
    if (rsize < sizeof status + 4 || rsize > 4096)
        return 2;
    char resp[4096 * 64];
    size_t pad = rsize - (sizeof status - 1) - 4;
    memcpy(resp, status, sizeof status - 1);
    memset(resp + sizeof status - 1, 'x', pad);
    memcpy(resp + rsize - 4, "\r\n\r\n", 4);
    for (int i = 1; i < 64; i++)
        memcpy(resp + i * rsize, resp, rsize);
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", argv[1]);
    unlink(a.sun_path);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 512) != 0) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("ready\n");
    fflush(stdout);
    static char buf[1 << 18];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (c >= 0 && c < MAXC) {
                    carry[c] = 0;
                    ev.events = EPOLLIN;
                    ev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                } else if (c >= 0) {
                    close(c);
                }
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                close(fd);
                continue;
            }
            for (size_t k = heads(fd, buf, (size_t)r); k;) {
                size_t m = k < 64 ? k : 64;
                if (write(fd, resp, m * rsize) < 0)
                    break;
                k -= m;
            }
        }
    }
}
