/* A getaddrinfo client for tests/support/ndots.py: the lookup an application makes, timed.
 *
 * Usage: gai_client NAME [REPEAT]
 *
 * Calls getaddrinfo(NAME, NULL) with AF_UNSPEC and SOCK_STREAM (one entry per address, no
 * per-socktype duplicates) and no AI_ADDRCONFIG (so both A and AAAA are always asked, whatever
 * addresses the namespace has), REPEAT times (default 1), back to back. It prints
 *
 *   addr ADDRESS      one line per address of the first lookup, in the order returned
 *   error NAME        instead, when the first lookup failed (NONAME, AGAIN, FAIL, NODATA, ...)
 *   us N N ...        the elapsed microseconds of every lookup (CLOCK_MONOTONIC)
 *
 * and exits 0 either way: a failed lookup is an answer too (the name exists nowhere). The same
 * source builds against glibc (gcc) and musl (musl-gcc -static), so both resolvers are measured
 * in-process, without the cost of starting a program.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static const char *error_name(int code) {
    switch (code) {
    case EAI_NONAME: return "NONAME";
    case EAI_AGAIN: return "AGAIN";
    case EAI_FAIL: return "FAIL";
#ifdef EAI_NODATA
    case EAI_NODATA: return "NODATA";
#endif
    case EAI_FAMILY: return "FAMILY";
    case EAI_MEMORY: return "MEMORY";
    case EAI_SYSTEM: return "SYSTEM";
    default: return "OTHER";
    }
}

static void print_addresses(const struct addrinfo *list) {
    char text[INET6_ADDRSTRLEN];
    for (const struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
        const void *raw;
        if (ai->ai_family == AF_INET) {
            raw = &((const struct sockaddr_in *)ai->ai_addr)->sin_addr;
        } else if (ai->ai_family == AF_INET6) {
            raw = &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        } else {
            continue;
        }
        if (inet_ntop(ai->ai_family, raw, text, sizeof text) != NULL) {
            printf("addr %s\n", text);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s NAME [REPEAT]\n", argv[0]);
        return 2;
    }
    long repeat = argc == 3 ? strtol(argv[2], NULL, 10) : 1;
    if (repeat < 1 || repeat > 10000) {
        fprintf(stderr, "REPEAT must be 1-10000\n");
        return 2;
    }
    long *elapsed = calloc((size_t)repeat, sizeof *elapsed);
    if (elapsed == NULL) {
        return 2;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    for (long i = 0; i < repeat; i++) {
        struct addrinfo *list = NULL;
        struct timespec start, end;
        clock_gettime(CLOCK_MONOTONIC, &start);
        int code = getaddrinfo(argv[1], NULL, &hints, &list);
        clock_gettime(CLOCK_MONOTONIC, &end);
        elapsed[i] = (end.tv_sec - start.tv_sec) * 1000000L + (end.tv_nsec - start.tv_nsec) / 1000L;
        if (i == 0) {
            if (code == 0) {
                print_addresses(list);
            } else {
                printf("error %s\n", error_name(code));
            }
        }
        if (code == 0) {
            freeaddrinfo(list);
        }
    }
    printf("us");
    for (long i = 0; i < repeat; i++) {
        printf(" %ld", elapsed[i]);
    }
    printf("\n");
    free(elapsed);
    return 0;
}
