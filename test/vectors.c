//go:build ignore

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vectors.c - the C runner of the shared test vectors
 * (libspbroker/testdata/vectors): it makes the calls, and the Go harness
 * (test/vectors_test.go) compares what it prints with the vectors, and
 * the output of one archive with the other's, byte for byte.
 *
 * It uses only helper.h and proto.h, so it links against any build of the
 * library: a path to libspbroker.a or the flags of a pkg-config name.
 *
 * Input on stdin, one command a line (HEX is lowercase hex, "-" for none):
 *
 *   M NAME NFDS EXPECTED HEX   validate a message: HEX copied into a zeroed
 *                              struct sp_broker_msg, n_fds = NFDS;
 *                              EXPECTED is "-" (NULL), "e" (an empty
 *                              list) or a comma-separated list
 *   S NAME DIR                 start a scenario: a socketpair, the client's
 *                              end and the broker's; "{dir}" in paths is DIR
 *   bind PATH                  bind a socket at PATH, no listen
 *   listen PATH                bind and listen with a backlog of 0
 *   connect PATH NONBLOCK      sp_broker_connect
 *   get_pair PATH MODE KEYHEX  sp_broker_get_pair(_nondirectional)
 *   send MODE KEYHEX           sp_broker_send_get_pair(_nondirectional)
 *   recv                       sp_broker_receive_set_pair
 *   nonblock                   make the client's end O_NONBLOCK
 *   bwrite NFDS HEX            the broker writes HEX in one sendmsg with
 *                              NFDS descriptors (ends of new socketpairs;
 *                              "pN": the write ends of N pipes)
 *   bread                      the broker reads what is there
 *   bclose                     the broker closes its end
 *   serve PATH READ NFDS HEX   listen at PATH; a thread accepts one
 *                              connection, waits for the request, reads
 *                              it if READ is 1, writes HEX ("-": nothing)
 *                              with NFDS descriptors, closes
 *   served                     print what that thread read
 *   E                          end the scenario: close both ends, check
 *                              that every descriptor passed is closed
 *   A NAME                     one call with bad arguments (see below)
 *
 * With --fork the commands run in a child forked after a first call.
 *
 * Output: for each call "OP ok" or "OP fail ERRNO MESSAGE" (the message
 * as *err holds it, "(null)" if none, "(no err)" when err was NULL).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>
#include <socketpair-broker/proto.h>

#define MAX_KEPT 256
/* The kernel's SCM_MAX_FD: the most descriptors one message can carry. */
#define SCM_MAX_FD 253
#define LINE_MAX_LEN 16384

static char sentinel_byte;
#define SENTINEL (&sentinel_byte)

static int client_fd = -1, broker_fd = -1;
static int kept[MAX_KEPT];
static int n_kept;
static bool kept_pipe; /* the descriptors passed were pipes' write ends */
static int others[64];
static int n_others;
static char scenario_dir[4096];

static void
die(const char *what)
{
    fprintf(stderr, "vectors: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int
unhex(const char *s, unsigned char *out, size_t cap)
{
    size_t n = strlen(s);

    if (strcmp(s, "-") == 0)
        return 0;
    if (n % 2 || n / 2 > cap)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned int b;

        if (sscanf(s + 2 * i, "%2x", &b) != 1)
            return -1;
        out[i] = (unsigned char) b;
    }
    return (int) (n / 2);
}

/* path with "{dir}" replaced by the scenario's directory. */
static void
expand(const char *in, char *out, size_t cap)
{
    const char *p = strstr(in, "{dir}");

    if (p)
        snprintf(out, cap, "%.*s%s%s", (int) (p - in), in, scenario_dir, p + 5);
    else
        snprintf(out, cap, "%s", in);
}

/*
 * report - print the outcome of a call that returned ret with errno e
 * and err (SENTINEL if untouched; use_err false when err was NULL).
 */
static void
report(const char *op, int ret, int e, char *err, bool use_err)
{
    if (ret >= 0) {
        printf("%s ok%s\n", op, use_err && err != SENTINEL ? " (err touched)" : "");
        return;
    }
    if (!use_err)
        printf("%s fail %d (no err)\n", op, e);
    else if (err == SENTINEL)
        printf("%s fail %d (err untouched)\n", op, e);
    else
        printf("%s fail %d %s\n", op, e, err ? err : "(null)");
    if (use_err && err != SENTINEL)
        free(err);
}

static void
do_validate(char *name, int nfds, char *exp, const char *hex)
{
    static unsigned char bytes[SP_BROKER_MESSAGE_SIZE];
    enum sp_broker_request list[16];
    struct sp_broker_msg msg;
    const enum sp_broker_request *expected = NULL;
    int n_expected = 0, n;
    char *err = SENTINEL;
    int ret, e;

    memset(bytes, 0, sizeof bytes);
    n = unhex(hex, bytes, sizeof bytes);
    if (n < 0) {
        fprintf(stderr, "vectors: bad hex for %s\n", name);
        exit(2);
    }
    if (strcmp(exp, "-") != 0) {
        expected = list;
        if (strcmp(exp, "e") != 0) {
            for (char *tok = strtok(exp, ","); tok && n_expected < 16;
                 tok = strtok(NULL, ","))
                list[n_expected++] = (enum sp_broker_request) strtoul(tok, NULL, 10);
        }
    }
    memset(&msg, 0, sizeof msg);
    memcpy(&msg, bytes, SP_BROKER_MESSAGE_SIZE);
    msg.n_fds = nfds;
    errno = 0;
    ret = sp_broker_message_validate(&msg, expected, n_expected, &err);
    e = errno;
    printf("M %s ", name);
    report("validate", ret, e, err, true);
}

/* Whether a and b are the two ends of one connection. */
static bool
connected(int a, int b)
{
    struct pollfd p = { .fd = b, .events = POLLIN };
    char c = 'x';

    if (write(a, &c, 1) != 1 || poll(&p, 1, 5000) != 1)
        return false;
    return read(b, &c, 1) == 1 && c == 'x';
}

/* Whether fd reads end of file: its other end is closed. */
static bool
peer_closed(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    char c;

    if (poll(&p, 1, 5000) != 1)
        return false;
    return read(fd, &c, 1) == 0;
}

/* Read without waiting what is queued on fd, closing any descriptors. */
static size_t
drain(int fd, unsigned char *out, size_t cap)
{
    size_t n = 0;

    while (n < cap) {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(SCM_MAX_FD * sizeof(int))];
        } ctl;
        struct iovec iov = { .iov_base = out + n, .iov_len = cap - n };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                             .msg_control = ctl.buf,
                             .msg_controllen = sizeof ctl.buf };
        ssize_t r = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

        if (r <= 0)
            break;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

                for (size_t i = 0; i < k; i++) {
                    int d;

                    memcpy(&d, CMSG_DATA(c) + i * sizeof(int), sizeof d);
                    close(d);
                }
            }
        }
        n += (size_t) r;
    }
    return n;
}

static void
print_hex(const char *op, const unsigned char *b, size_t n)
{
    printf("%s ", op);
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
}

/*
 * The broker of a serve command, in a thread: it accepts one connection,
 * waits for the request, reads it if told to, writes its reply if any, and
 * closes.  Joined by the next get_pair.
 */
struct server {
    pthread_t thread;
    bool running;
    int lfd;
    bool read;
    int nfds;
    unsigned char reply[4096];
    int reply_len;
    unsigned char got[SP_BROKER_MESSAGE_SIZE];
    size_t got_len;
    const char *failed; /* what went wrong, or NULL */
};

static struct server server;

static void
broker_write(int nfds, bool pipes, const char *hex)
{
    static unsigned char bytes[8192];
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(MAX_KEPT * sizeof(int))];
    } ctl;
    int fds[MAX_KEPT];
    struct iovec iov;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    int n;

    if (hex) {
        n = unhex(hex, bytes, sizeof bytes);
    } else {
        memcpy(bytes, server.reply, (size_t) server.reply_len);
        n = server.reply_len;
    }

    if (n < 0 || nfds < 0 || n_kept + nfds > MAX_KEPT) {
        fprintf(stderr, "vectors: bad bwrite\n");
        exit(2);
    }
    for (int i = 0; i < nfds; i++) {
        int sp[2];

        if (pipes ? pipe2(sp, O_CLOEXEC) < 0
                  : socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
            die("socketpair");
        kept_pipe = pipes;
        kept[n_kept++] = sp[0];
        fds[i] = sp[1];
    }
    iov.iov_base = bytes;
    iov.iov_len = (size_t) n;
    if (nfds > 0) {
        struct cmsghdr *c;

        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE((size_t) nfds * sizeof(int));
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t) nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, (size_t) nfds * sizeof(int));
    }
    if (sendmsg(broker_fd, &mh, MSG_NOSIGNAL) != n)
        die("sendmsg");
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

static bool
mode_server(const char *mode, bool *nondir)
{
    *nondir = strcmp(mode, "none") == 0;
    return strcmp(mode, "server") == 0;
}


static bool
wait_in(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    return poll(&p, 1, 10000) == 1;
}

static void *
server_main(void *arg)
{
    struct server *sv = arg;
    int cfd;

    if (!wait_in(sv->lfd) || (cfd = accept4(sv->lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
        sv->failed = "no connection";
        return NULL;
    }
    if (!wait_in(cfd)) {
        sv->failed = "no request";
        close(cfd);
        return NULL;
    }
    if (sv->read) {
        while (sv->got_len < sizeof sv->got && wait_in(cfd)) {
            ssize_t r = read(cfd, sv->got + sv->got_len, sizeof sv->got - sv->got_len);

            if (r <= 0)
                break;
            sv->got_len += (size_t) r;
        }
    }
    if (sv->reply_len > 0) {
        int save = broker_fd;

        broker_fd = cfd;
        broker_write(sv->nfds, false, NULL);
        broker_fd = save;
    }
    close(cfd);
    return NULL;
}

static void
server_join(void)
{
    if (!server.running)
        return;
    pthread_join(server.thread, NULL);
    server.running = false;
    if (server.failed) {
        fprintf(stderr, "vectors: the broker played here: %s\n", server.failed);
        exit(2);
    }
}

static void
scenario_command(char *op, char **args, int nargs)
{
    char path[4096];
    char *err = SENTINEL;
    int ret, e;

    if ((strcmp(op, "bind") == 0 || strcmp(op, "listen") == 0) && nargs == 1) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        expand(args[0], path, sizeof path);
        if (strlen(path) >= sizeof sa.sun_path) {
            fprintf(stderr, "vectors: path too long: %s\n", path);
            exit(2);
        }
        memcpy(sa.sun_path, path, strlen(path) + 1);
        unlink(path); /* left by the run of another build */
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
            die("bind");
        if (op[0] == 'l' && listen(fd, 0) < 0)
            die("listen");
        others[n_others++] = fd;
    } else if (strcmp(op, "connect") == 0 && nargs == 2) {
        expand(args[0], path, sizeof path);
        errno = 0;
        ret = sp_broker_connect(path, strcmp(args[1], "1") == 0, &err);
        e = errno;
        if (ret >= 0 && n_others < 64)
            others[n_others++] = ret; /* open to the scenario's end */
        else if (ret >= 0)
            close(ret);
        report(op, ret, e, err, true);
    } else if (strcmp(op, "get_pair") == 0 && nargs == 3) {
        char key[2048] = { 0 };
        bool nondir, is_server = mode_server(args[1], &nondir);

        expand(args[0], path, sizeof path);
        if (unhex(args[2], (unsigned char *) key, sizeof key - 1) < 0)
            die("key");
        errno = 0;
        ret = nondir ? sp_broker_get_pair_nondirectional(path, key, &err)
                     : sp_broker_get_pair(path, key, is_server, &err);
        e = errno;
        server_join();
        report(op, ret, e, err, true);
        if (ret >= 0) {
            bool same = n_kept > 0 && connected(ret, kept[0]) &&
                        (kept_pipe || connected(kept[0], ret));

            printf("peer %s\n", same ? "ok" : "NOT THE DESCRIPTOR SENT");
            close(ret);
        }
    } else if (strcmp(op, "serve") == 0 && nargs == 4) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        expand(args[0], path, sizeof path);
        if (strlen(path) >= sizeof sa.sun_path)
            die("serve path");
        memcpy(sa.sun_path, path, strlen(path) + 1);
        unlink(path);
        memset(&server, 0, sizeof server);
        server.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (server.lfd < 0 || bind(server.lfd, (struct sockaddr *) &sa, sizeof sa) < 0 ||
            listen(server.lfd, 4) < 0)
            die("serve");
        others[n_others++] = server.lfd;
        server.read = strcmp(args[1], "1") == 0;
        server.nfds = atoi(args[2]);
        server.reply_len = unhex(args[3], server.reply, sizeof server.reply);
        if (server.reply_len < 0)
            die("serve reply");
        if (pthread_create(&server.thread, NULL, server_main, &server) != 0)
            die("pthread_create");
        server.running = true;
    } else if (strcmp(op, "served") == 0 && nargs == 0) {
        print_hex("served", server.got, server.got_len);
    } else if (strcmp(op, "send") == 0 && nargs == 2) {
        char key[2048] = { 0 };
        bool nondir, server = mode_server(args[0], &nondir);

        if (unhex(args[1], (unsigned char *) key, sizeof key - 1) < 0)
            die("key");
        errno = 0;
        ret = nondir ? sp_broker_send_get_pair_nondirectional(client_fd, key, &err)
                     : sp_broker_send_get_pair(client_fd, key, server, &err);
        e = errno;
        report(op, ret, e, err, true);
    } else if (strcmp(op, "recv") == 0 && nargs == 0) {
        unsigned char left[4000];

        errno = 0;
        ret = sp_broker_receive_set_pair(client_fd, &err);
        e = errno;
        report(op, ret, e, err, true);
        if (ret >= 0) {
            bool same = n_kept > 0 && connected(ret, kept[0]) &&
                        (kept_pipe || connected(kept[0], ret));

            printf("peer %s\n", same ? "ok" : "NOT THE DESCRIPTOR SENT");
            close(ret);
        }
        printf("left %zu\n", drain(client_fd, left, sizeof left));
    } else if (strcmp(op, "nonblock") == 0 && nargs == 0) {
        if (fcntl(client_fd, F_SETFL, fcntl(client_fd, F_GETFL) | O_NONBLOCK) < 0)
            die("fcntl");
    } else if (strcmp(op, "bwrite") == 0 && nargs == 2) {
        /* "pN": N write ends of pipes instead of socketpair ends. */
        broker_write(atoi(args[0] + (args[0][0] == 'p')), args[0][0] == 'p', args[1]);
    } else if (strcmp(op, "bread") == 0 && nargs == 0) {
        unsigned char got[4000];

        print_hex("bread", got, drain(broker_fd, got, sizeof got));
    } else if (strcmp(op, "bclose") == 0 && nargs == 0) {
        close(broker_fd);
        broker_fd = -1;
    } else {
        fprintf(stderr, "vectors: unknown command %s/%d\n", op, nargs);
        exit(2);
    }
}

static void
scenario_start(const char *name, const char *dir)
{
    int sp[2];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
        die("socketpair");
    client_fd = sp[0];
    broker_fd = sp[1];
    n_kept = n_others = 0;
    kept_pipe = false;
    snprintf(scenario_dir, sizeof scenario_dir, "%s", dir);
    printf("S %s\n", name);
}

static void
scenario_end(void)
{
    close(client_fd);
    if (broker_fd >= 0)
        close(broker_fd);
    for (int i = 0; i < n_others; i++)
        close(others[i]);
    for (int i = 0; i < n_kept; i++) {
        if (!peer_closed(kept[i]))
            printf("descriptor %d passed is still open\n", i);
        close(kept[i]);
    }
    printf("E\n");
}

/* A valid SET_PAIR and an invalid one, for the argument cases. */
static void
set_pair_msg(struct sp_broker_msg *m, int nfds)
{
    memset(m, 0, sizeof *m);
    m->request = SP_BROKER_SET_PAIR;
    m->flags = SP_BROKER_PROTOCOL_VERSION;
    m->size = 8;
    m->n_fds = nfds;
}

/* The calls with bad arguments, by the names sockets.json gives them. */
static void
argument_case(const char *name)
{
    static const enum sp_broker_request set = SP_BROKER_SET_PAIR;
    char long_path[109], long_key[1026];
    struct sp_broker_msg m;
    char *err = SENTINEL;
    bool use_err = true;
    int ret, e, p[2] = { -1, -1 };

    memset(long_path, 'p', 108);
    long_path[108] = '\0';
    memset(long_key, 'K', 1025);
    long_key[1025] = '\0';
    set_pair_msg(&m, 1);
    errno = 0;

#define CASE(n) else if (strcmp(name, n) == 0)
    if (0) {
    }
    CASE("validate/NULL-msg") ret = sp_broker_message_validate(NULL, NULL, 0, &err);
    CASE("validate/NULL-msg-NULL-err") {
        use_err = false;
        ret = sp_broker_message_validate(NULL, &set, 1, NULL);
    }
    CASE("validate/negative-n_expected") ret = sp_broker_message_validate(&m, &set, -1, &err);
    CASE("validate/NULL-expected-negative-n_expected") ret = sp_broker_message_validate(&m, NULL, -1, &err);
    CASE("validate/valid-NULL-err") {
        use_err = false;
        ret = sp_broker_message_validate(&m, &set, 1, NULL);
    }
    CASE("validate/invalid-NULL-err") {
        use_err = false;
        m.size = 9;
        ret = sp_broker_message_validate(&m, &set, 1, NULL);
    }
    CASE("connect/NULL-path") ret = sp_broker_connect(NULL, false, &err);
    CASE("connect/NULL-path-NULL-err") {
        use_err = false;
        ret = sp_broker_connect(NULL, true, NULL);
    }
    CASE("connect/path-too-long") ret = sp_broker_connect(long_path, false, &err);
    CASE("send_get_pair/NULL-key") ret = sp_broker_send_get_pair(client_fd, NULL, true, &err);
    CASE("send_get_pair/NULL-key-NULL-err") {
        use_err = false;
        ret = sp_broker_send_get_pair(client_fd, NULL, false, NULL);
    }
    CASE("send_get_pair_nondirectional/NULL-key") ret = sp_broker_send_get_pair_nondirectional(client_fd, NULL, &err);
    CASE("send_get_pair/empty-key") ret = sp_broker_send_get_pair(client_fd, "", false, &err);
    CASE("send_get_pair/bad-fd") ret = sp_broker_send_get_pair(-1, "k", false, &err);
    CASE("receive_set_pair/bad-fd") ret = sp_broker_receive_set_pair(-1, &err);
    CASE("receive_set_pair/bad-fd-NULL-err") {
        use_err = false;
        ret = sp_broker_receive_set_pair(-1, NULL);
    }
    CASE("receive_set_pair/not-a-socket") {
        if (pipe2(p, O_CLOEXEC) < 0)
            die("pipe2");
        errno = 0;
        ret = sp_broker_receive_set_pair(p[0], &err);
    }
    CASE("get_pair/NULL-path") ret = sp_broker_get_pair(NULL, "k", false, &err);
    CASE("get_pair/NULL-key") ret = sp_broker_get_pair("/nonexistent/one.sock", NULL, true, &err);
    CASE("get_pair/NULL-path-NULL-key") ret = sp_broker_get_pair(NULL, NULL, true, &err);
    CASE("get_pair/empty-key") ret = sp_broker_get_pair("/nonexistent/one.sock", "", true, &err);
    CASE("get_pair/key1025") ret = sp_broker_get_pair("/nonexistent/one.sock", long_key, false, &err);
    CASE("get_pair/NULL-key-NULL-err") {
        use_err = false;
        ret = sp_broker_get_pair("/nonexistent/one.sock", NULL, false, NULL);
    }
    CASE("get_pair_nondirectional/NULL-path") ret = sp_broker_get_pair_nondirectional(NULL, "k", &err);
    CASE("get_pair_nondirectional/NULL-key") ret = sp_broker_get_pair_nondirectional("/nonexistent/one.sock", NULL, &err);
    else {
        fprintf(stderr, "vectors: unknown argument case %s\n", name);
        exit(2);
    }
#undef CASE
    e = errno;
    if (ret >= 0 && ret != 0)
        close(ret);
    if (p[0] >= 0) {
        close(p[0]);
        close(p[1]);
    }
    printf("A %s ", name);
    report("call", ret, e, err, use_err);
}

int
main(int argc, char **argv)
{
    static char line[LINE_MAX_LEN];

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && strcmp(argv[1], "--fork") == 0) {
        /*
         * Run in a child forked after a first call: the Go archive must
         * notice and serve the child from its C path, with the same
         * results.
         */
        int status;
        pid_t pid;

        (void) sp_broker_message_validate(NULL, NULL, 0, NULL);
        fflush(stdout);
        pid = fork();
        if (pid < 0)
            die("fork");
        if (pid > 0) {
            if (waitpid(pid, &status, 0) != pid)
                die("waitpid");
            return WIFEXITED(status) ? WEXITSTATUS(status) : 3;
        }
    } else if (argc != 1) {
        fprintf(stderr, "usage: vectors [--fork] < commands\n");
        return 2;
    }
    while (fgets(line, sizeof line, stdin)) {
        char *args[8];
        int nargs = 0;
        char *save = NULL;
        char *op;

        line[strcspn(line, "\n")] = '\0';
        op = strtok_r(line, " ", &save);
        if (!op)
            continue;
        for (char *tok; nargs < 8 && (tok = strtok_r(NULL, " ", &save));)
            args[nargs++] = tok;

        if (strcmp(op, "M") == 0 && nargs == 4) {
            do_validate(args[0], atoi(args[1]), args[2], args[3]);
        } else if (strcmp(op, "S") == 0 && nargs == 2) {
            scenario_start(args[0], args[1]);
        } else if (strcmp(op, "E") == 0 && nargs == 0) {
            scenario_end();
        } else if (strcmp(op, "A") == 0 && nargs == 1) {
            /* The argument cases run on a socketpair of their own. */
            scenario_start(args[0], "/nonexistent");
            argument_case(args[0]);
            scenario_end();
        } else {
            scenario_command(op, args, nargs);
        }
    }
    return 0;
}
