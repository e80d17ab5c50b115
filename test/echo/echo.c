/* SPDX-License-Identifier: Apache-2.0 */
/*
 * echo - the smallest useful libspbroker program: two processes that find
 * each other through a SocketPair Broker and talk over the socket it hands
 * them.  It uses nothing but the public API (helper.h).
 *
 * Usage: echo SOCKET KEY server|client [MESSAGE]
 *
 *   server  asks for the SERVER end of a pair under KEY, then sends every
 *           line it receives back to the peer, until the peer hangs up.
 *   client  asks for the CLIENT end, sends MESSAGE (or, without one, a line
 *           read from standard input) and a newline, and prints what comes
 *           back.
 *
 * Start either side first: the broker keeps the first one waiting until
 * the other arrives.  For example, with a broker on ./one.socket:
 *
 *   ./echo ./one.socket demo server &
 *   ./echo ./one.socket demo client 'hello'      # prints "hello"
 *
 * Exit status: 0 on success, 1 on failure (the reason on stderr), 2 for a
 * bad command line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <socketpair-broker/helper.h>

/* report - print the library's message if there is one, else errno's. */
static int
report(const char *what, char *err)
{
    int errnum = errno;

    fprintf(stderr, "echo: %s: %s (errno %d, %s)\n", what,
            err ? err : "no message", errnum, strerror(errnum));
    free(err);
    return 1;
}

/* send_all - write all of buf to the socket; false on failure. */
static bool
send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        /* MSG_NOSIGNAL: a peer that left gives EPIPE, not SIGPIPE. */
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        buf += n;
        len -= (size_t) n;
    }
    return true;
}

/* serve - echo lines on fd until the peer hangs up. */
static int
serve(int fd)
{
    FILE *in = fdopen(fd, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int ret = 0;

    if (!in) {
        perror("echo: fdopen");
        close(fd);
        return 1;
    }
    while ((len = getline(&line, &cap, in)) > 0) {
        if (!send_all(fd, line, (size_t) len)) {
            perror("echo: send");
            ret = 1;
            break;
        }
    }
    if (ferror(in)) {
        perror("echo: read");
        ret = 1;
    }
    free(line);
    fclose(in);                 /* closes fd */
    return ret;
}

/* ask - send msg and a newline, then print everything that comes back. */
static int
ask(int fd, const char *msg)
{
    char buf[4096];
    ssize_t n;

    if (!send_all(fd, msg, strlen(msg)) || !send_all(fd, "\n", 1)) {
        perror("echo: send");
        close(fd);
        return 1;
    }
    /* Tell the server we are done; it closes after the last echo. */
    if (shutdown(fd, SHUT_WR) < 0) {
        perror("echo: shutdown");
        close(fd);
        return 1;
    }
    while ((n = read(fd, buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("echo: read");
            close(fd);
            return 1;
        }
        if (fwrite(buf, 1, (size_t) n, stdout) != (size_t) n) {
            perror("echo: stdout");
            close(fd);
            return 1;
        }
    }
    close(fd);
    return fflush(stdout) == 0 ? 0 : 1;
}

int
main(int argc, char **argv)
{
    const char *path, *key, *side;
    char *msg = NULL, *line = NULL, *err = NULL;
    size_t cap = 0;
    bool server;
    int fd, ret;

    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: echo SOCKET KEY server|client [MESSAGE]\n");
        return 2;
    }
    path = argv[1];
    key = argv[2];
    side = argv[3];
    if (strcmp(side, "server") == 0) {
        server = true;
    } else if (strcmp(side, "client") == 0) {
        server = false;
    } else {
        fprintf(stderr, "echo: the third argument is server or client, "
                        "not '%s'\n", side);
        return 2;
    }
    if (server && argc == 5) {
        fprintf(stderr, "echo: MESSAGE is for the client side\n");
        return 2;
    }

    if (!server) {
        if (argc == 5) {
            msg = argv[4];
        } else {
            ssize_t len = getline(&line, &cap, stdin);

            if (len < 0) {
                fprintf(stderr, "echo: no message on standard input\n");
                free(line);
                return 1;
            }
            if (len > 0 && line[len - 1] == '\n') {
                line[len - 1] = '\0';
            }
            msg = line;
        }
    }

    /* Blocks until a peer asks for the same key with the opposite mode. */
    fd = sp_broker_get_pair(path, key, server, &err);
    if (fd < 0) {
        free(line);
        return report("sp_broker_get_pair", err);
    }
    ret = server ? serve(fd) : ask(fd, msg);
    free(line);
    return ret;
}
