/* The C ceiling for ./warren bench fdpass: the same round trip as the Java one (a message with
 * 2 fds over an AF_UNIX SOCK_SEQPACKET socketpair, answered with the same 2 fds), two threads,
 * blocking sendmsg/recvmsg with MSG_CMSG_CLOEXEC. Prints round trips per second. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int send_fds(int s, const char *buf, size_t len, int *fds, int n) {
    char cbuf[CMSG_SPACE(sizeof(int) * 2)];
    struct iovec iov = {(void *)buf, len};
    struct msghdr m = {0};
    m.msg_iov = &iov; m.msg_iovlen = 1;
    m.msg_control = cbuf; m.msg_controllen = CMSG_SPACE(sizeof(int) * n);
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
    return sendmsg(s, &m, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

static int recv_fds(int s, char *buf, size_t cap, int *fds) {
    char cbuf[CMSG_SPACE(sizeof(int) * 253)];
    struct iovec iov = {buf, cap};
    struct msghdr m = {0};
    m.msg_iov = &iov; m.msg_iovlen = 1; m.msg_control = cbuf; m.msg_controllen = sizeof cbuf;
    ssize_t r = recvmsg(s, &m, MSG_CMSG_CLOEXEC);
    if (r <= 0 || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) return -1;
    int n = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            memcpy(fds, CMSG_DATA(c), sizeof(int) * n);
        }
    return n;
}

static void *responder(void *arg) {
    int s = *(int *)arg, fds[253];
    char buf[65536];
    for (;;) {
        int n = recv_fds(s, buf, sizeof buf, fds);
        if (n < 0) return NULL;
        send_fds(s, "spliced", 7, fds, n);
        for (int i = 0; i < n; i++) close(fds[i]);
    }
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3;
    int sv[2], a[2], b[2], fds[253];
    char buf[65536];
    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
    pthread_t t;
    pthread_create(&t, NULL, responder, &sv[1]);
    struct timespec t0, t1;
    long n = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a);
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b);
        int two[2] = {a[0], b[0]};
        send_fds(sv[0], "splice-request", 14, two, 2);
        int k = recv_fds(sv[0], buf, sizeof buf, fds);
        for (int i = 0; i < k; i++) close(fds[i]);
        close(a[0]); close(a[1]); close(b[0]); close(b[1]);
        n++;
        if ((n & 255) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double el = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
            if (el >= seconds) { printf("%.0f\n", n / el); return 0; }
        }
    }
}
