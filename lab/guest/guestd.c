/*
 * guestd: the agent inside a Presculpt lab guest.
 *
 * It onlines hot-plugged CPUs, generates the CPU and memory load given by a load spec file, and
 * reports the guest's own view of itself on the serial console (stdout), one line per second and
 * at once when the number of online CPUs or MemTotal changes:
 *
 *   PRESCULPT-REPORT seq=12 uptime_ms=... reason=tick online_cpus=2 mem_total_kib=...
 *     mem_available_kib=... load_cores=0.98 work_rate=123456 demand_cores=1.000
 *     demand_mem_mib=100 mem_held_mib=100 step=3 started=1
 *
 * load_cores is measured from /proc/stat (busy jiffies per second, all CPUs); work_rate is loop
 * iterations per second summed over the workers, so a CPU quota the host imposes shows as a drop
 * in work_rate at the same demand. A PRESCULPT-READY line with the same fields is printed once at
 * start. started=0 while a spec with start_on_nmi waits for its start (it holds the first step
 * meanwhile); the schedule starts when the guest receives an NMI (virsh inject-nmi: a host can so
 * start the loads of several guests at one instant, whenever each booted) or, for tests on a host,
 * SIGUSR1, and a report with reason=start is printed at once. Run as PID 1 it forks the agent and
 * restarts it should it die (e.g. killed by the OOM killer), printing a PRESCULPT-EVENT line.
 *
 * Load spec (text, one directive per line, '#' comments):
 *   label NAME                 free text without spaces, echoed in the READY line
 *   seconds_per_step 2.5       how long each step lasts (0: the first step forever)
 *   repeat 1                   start over after the last step (default: hold the last step)
 *   mem_reserve_mib 32         never allocate below this much MemAvailable
 *   start_on_nmi 1             hold the first step until an NMI (or SIGUSR1) starts the schedule
 *   step CPU_CORES MEM_MIB     one step of demand (repeatable, in order)
 *
 * Usage: guestd [-n] [SPEC]   (-n: leave CPUs offline, for running it on a host in tests)
 * Build: gcc -O2 -static -pthread -o guestd guestd.c
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SPEC_PATH "/etc/presculpt/load.spec"
#define MAX_WORKERS 256
#define SLICE_NS 100000000LL       /* duty-cycle slice of a worker: 100 ms */
#define POLL_NS 100000000LL        /* main loop period: 100 ms */
#define REPORT_NS 1000000000LL     /* periodic report: 1 s */
#define CHUNK_ITERS 4096           /* busy-loop iterations between clock reads */
#define MEM_CHUNK_MIB 1            /* memory is held in chunks of this size */
#define MEM_STEP_CHUNKS 32         /* at most this many chunks allocated per memory tick */
#define RETOUCH_NS 5000000000LL    /* re-touch every held page this often */
#define WORKER_NICE 10             /* workers yield to the reporting loop */
#define WAIT_POLL_NS 20000000LL    /* how often a guest waiting for its start looks for it: 20 ms
                                      * (/proc/interrupts is costly under TCG: ~1 ms of CPU a read) */

struct step {
    double cpu_cores;
    double mem_mib;
};

static struct {
    char label[128];
    double seconds_per_step;
    int repeat;
    double mem_reserve_mib;
    int start_on_nmi;
    struct step *steps;
    size_t nsteps;
} spec = {"none", 0.0, 0, 32.0, 0, NULL, 0};

/* Shared between threads; read and written with __atomic builtins. */
static int g_active_workers;    /* workers allowed to run (== online CPUs) */
static int g_duty_ppm;          /* busy fraction of each active worker, parts per million */
static int g_demand_mem_mib;    /* memory the memory thread should hold */
static int g_held_mib;          /* memory the memory thread holds now */
static int g_nworkers;          /* threads started */
static int g_online_cpus = 1;   /* online hot-plugged CPUs (off with -n) */
static volatile sig_atomic_t g_start_signal; /* SIGUSR1 received: start the schedule */
static int g_restarted;         /* the supervisor restarted the agent (its start came before) */

struct worker {
    uint64_t iterations;
    char pad[56];
};
static struct worker workers[MAX_WORKERS] __attribute__((aligned(64)));

static int64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t deadline_ns)
{
    struct timespec ts = {deadline_ns / 1000000000LL, deadline_ns % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Write one whole line to stdout with a single write(2) so lines do not interleave. */
static void emit(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof buf - 2)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t off = 0;
    while (off < n) {
        ssize_t w = write(STDOUT_FILENO, buf + off, n - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        off += w;
    }
}

/* ---- the load spec ---------------------------------------------------------------------- */

static void load_spec(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        emit("PRESCULPT-EVENT kind=spec_missing path=%s errno=%d", path, errno);
        return;
    }
    char line[512];
    size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || *p == '\n' || *p == '\0')
            continue;
        double a, b;
        int i;
        char word[128];
        if (sscanf(p, "step %lf %lf", &a, &b) == 2) {
            if (spec.nsteps == cap) {
                cap = cap ? cap * 2 : 64;
                spec.steps = realloc(spec.steps, cap * sizeof *spec.steps);
                if (!spec.steps) {
                    emit("PRESCULPT-EVENT kind=spec_too_large steps=%zu", spec.nsteps);
                    exit(1);
                }
            }
            spec.steps[spec.nsteps].cpu_cores = a < 0 ? 0 : a;
            spec.steps[spec.nsteps].mem_mib = b < 0 ? 0 : b;
            spec.nsteps++;
        } else if (sscanf(p, "seconds_per_step %lf", &a) == 1) {
            spec.seconds_per_step = a < 0 ? 0 : a;
        } else if (sscanf(p, "repeat %d", &i) == 1) {
            spec.repeat = i != 0;
        } else if (sscanf(p, "mem_reserve_mib %lf", &a) == 1) {
            spec.mem_reserve_mib = a < 0 ? 0 : a;
        } else if (sscanf(p, "start_on_nmi %d", &i) == 1) {
            spec.start_on_nmi = i != 0;
        } else if (sscanf(p, "label %127s", word) == 1) {
            snprintf(spec.label, sizeof spec.label, "%s", word);
        } else {
            p[strcspn(p, "\r\n")] = '\0';
            emit("PRESCULPT-EVENT kind=spec_bad_line line=%.60s", p);
        }
    }
    fclose(f);
}

/* The step in force ``elapsed_ns`` after start, or -1 when the spec has none. */
static long step_at(int64_t elapsed_ns)
{
    if (spec.nsteps == 0)
        return -1;
    if (spec.seconds_per_step <= 0)
        return 0;
    long idx = (long)(elapsed_ns / (spec.seconds_per_step * 1e9));
    if (spec.repeat)
        return idx % (long)spec.nsteps;
    return idx < (long)spec.nsteps ? idx : (long)spec.nsteps - 1;
}

/* ---- reading the guest's own state ------------------------------------------------------ */

static int read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return (int)n;
}

/* Count the CPUs of a sysfs cpu list such as "0-2,4". */
static int count_cpu_list(const char *s)
{
    int count = 0;
    while (*s && *s != '\n') {
        char *end;
        long a = strtol(s, &end, 10);
        if (end == s)
            break;
        long b = a;
        if (*end == '-')
            b = strtol(end + 1, &end, 10);
        count += (int)(b - a + 1);
        s = (*end == ',') ? end + 1 : end;
    }
    return count;
}

static int online_cpus(void)
{
    char buf[256];
    if (read_file("/sys/devices/system/cpu/online", buf, sizeof buf) < 0)
        return 1;
    int n = count_cpu_list(buf);
    return n > 0 ? n : 1;
}

/* Online every CPU whose sysfs "online" reads 0; returns how many were onlined. */
static int online_offline_cpus(void)
{
    if (!g_online_cpus)
        return 0;
    DIR *dir = opendir("/sys/devices/system/cpu");
    if (!dir)
        return 0;
    int onlined = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (strncmp(de->d_name, "cpu", 3) != 0 || de->d_name[3] < '0' || de->d_name[3] > '9')
            continue;
        char path[300], buf[8];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/%s/online", de->d_name);
        if (read_file(path, buf, sizeof buf) <= 0 || buf[0] != '0')
            continue;
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (write(fd, "1", 1) == 1) {
            onlined++;
        } else {
            emit("PRESCULPT-EVENT kind=online_failed cpu=%s errno=%d", de->d_name + 3, errno);
        }
        close(fd);
    }
    closedir(dir);
    return onlined;
}

struct meminfo {
    long total_kib;
    long available_kib;
};

static struct meminfo read_meminfo(void)
{
    struct meminfo m = {0, 0};
    char buf[4096];
    if (read_file("/proc/meminfo", buf, sizeof buf) < 0)
        return m;
    char *p = strstr(buf, "MemTotal:");
    if (p)
        m.total_kib = strtol(p + 9, NULL, 10);
    p = strstr(buf, "MemAvailable:");
    if (p)
        m.available_kib = strtol(p + 13, NULL, 10);
    return m;
}

/* Busy and total jiffies of all CPUs from the first line of /proc/stat. */
static void read_cpu_jiffies(uint64_t *busy, uint64_t *total)
{
    char buf[512];
    unsigned long long v[10] = {0};
    *busy = *total = 0;
    if (read_file("/proc/stat", buf, sizeof buf) < 0)
        return;
    sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
           &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    /* user nice system idle iowait irq softirq steal guest guest_nice; guest time is in user. */
    uint64_t idle = v[3] + v[4];
    uint64_t all = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    *busy = all - idle;
    *total = all;
}

/* NMIs received by all CPUs so far (the "NMI:" row of /proc/interrupts); 0 when unreadable. */
static uint64_t nmi_count(void)
{
    static char buf[65536];
    if (read_file("/proc/interrupts", buf, sizeof buf) < 0)
        return 0;
    char *p = strstr(buf, "\nNMI:");
    if (!p)
        return 0;
    p += 5;
    uint64_t sum = 0;
    for (;;) {
        while (*p == ' ')
            p++;
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p)
            break;
        sum += v;
        p = end;
    }
    return sum;
}

static void on_start_signal(int sig)
{
    (void)sig;
    g_start_signal = 1;
}

/* ---- CPU load --------------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), WORKER_NICE);
    uint64_t x = (uint64_t)id * 2654435761u + 1;
    uint64_t iterations = 0;
    int64_t slice_start = now_ns(CLOCK_MONOTONIC);
    for (;;) {
        int active = __atomic_load_n(&g_active_workers, __ATOMIC_RELAXED);
        int duty = __atomic_load_n(&g_duty_ppm, __ATOMIC_RELAXED);
        if (id < active && duty > 0) {
            int64_t busy_ns = SLICE_NS * (int64_t)duty / 1000000;
            do {
                for (int k = 0; k < CHUNK_ITERS; k++)
                    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                iterations += CHUNK_ITERS;
                __atomic_store_n(&workers[id].iterations, iterations, __ATOMIC_RELAXED);
            } while (now_ns(CLOCK_MONOTONIC) - slice_start < busy_ns);
        }
        /* keep the result alive so the loop is not optimised away */
        __asm__ volatile("" : : "r"(x));
        slice_start += SLICE_NS;
        int64_t now = now_ns(CLOCK_MONOTONIC);
        if (slice_start < now - SLICE_NS)
            slice_start = now; /* we fell behind (throttled): do not try to catch up */
        sleep_until(slice_start);
    }
    return NULL;
}

/* Make sure at least ``n`` workers exist and let exactly ``n`` run, each at ``demand / n``. */
static void set_cpu_demand(double demand_cores, int n)
{
    if (n > MAX_WORKERS)
        n = MAX_WORKERS;
    while (g_nworkers < n) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        if (pthread_create(&t, &attr, worker_main, (void *)(intptr_t)g_nworkers) != 0) {
            emit("PRESCULPT-EVENT kind=thread_failed worker=%d", g_nworkers);
            pthread_attr_destroy(&attr);
            break;
        }
        pthread_attr_destroy(&attr);
        g_nworkers++;
    }
    if (n > g_nworkers)
        n = g_nworkers;
    double per_worker = n > 0 ? demand_cores / n : 0.0;
    if (per_worker > 1.0)
        per_worker = 1.0;
    __atomic_store_n(&g_duty_ppm, (int)(per_worker * 1e6 + 0.5), __ATOMIC_RELAXED);
    __atomic_store_n(&g_active_workers, n, __ATOMIC_RELAXED);
}

static uint64_t total_iterations(void)
{
    uint64_t sum = 0;
    for (int i = 0; i < g_nworkers; i++)
        sum += __atomic_load_n(&workers[i].iterations, __ATOMIC_RELAXED);
    return sum;
}

/* ---- memory load ------------------------------------------------------------------------ */

static void *memory_main(void *arg)
{
    (void)arg;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), WORKER_NICE);
    const size_t chunk = (size_t)MEM_CHUNK_MIB << 20;
    const long page = sysconf(_SC_PAGESIZE);
    char **chunks = NULL;
    size_t held = 0, cap = 0;
    unsigned char pattern = 1;
    int64_t last_touch = now_ns(CLOCK_MONOTONIC);
    int short_reported = 0;
    for (;;) {
        size_t want = (size_t)__atomic_load_n(&g_demand_mem_mib, __ATOMIC_RELAXED) / MEM_CHUNK_MIB;
        for (int k = 0; k < MEM_STEP_CHUNKS && held < want; k++) {
            struct meminfo m = read_meminfo();
            if ((double)m.available_kib / 1024.0 - MEM_CHUNK_MIB < spec.mem_reserve_mib) {
                if (!short_reported)
                    emit("PRESCULPT-EVENT kind=mem_short held_mib=%zu want_mib=%zu available_kib=%ld",
                         held * MEM_CHUNK_MIB, want * MEM_CHUNK_MIB, m.available_kib);
                short_reported = 1;
                break;
            }
            if (held == cap) {
                cap = cap ? cap * 2 : 64;
                chunks = realloc(chunks, cap * sizeof *chunks);
            }
            char *p = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                break;
            memset(p, pattern, chunk);
            chunks[held++] = p;
        }
        while (held > want) {
            munmap(chunks[--held], chunk);
            short_reported = 0;
        }
        if (held >= want)
            short_reported = 0;
        __atomic_store_n(&g_held_mib, (int)(held * MEM_CHUNK_MIB), __ATOMIC_RELAXED);
        int64_t now = now_ns(CLOCK_MONOTONIC);
        if (now - last_touch >= RETOUCH_NS) {
            pattern = pattern == 255 ? 1 : pattern + 1;
            for (size_t c = 0; c < held; c++)
                for (size_t off = 0; off < chunk; off += (size_t)page)
                    ((volatile char *)chunks[c])[off] = (char)pattern;
            last_touch = now;
        }
        usleep(100000);
    }
    return NULL;
}

/* ---- the reporting loop ----------------------------------------------------------------- */

struct sample {
    int64_t mono_ns;
    uint64_t busy_jiffies;
    uint64_t iterations;
};

static struct sample take_sample(void)
{
    struct sample s;
    uint64_t total;
    s.mono_ns = now_ns(CLOCK_MONOTONIC);
    read_cpu_jiffies(&s.busy_jiffies, &total);
    s.iterations = total_iterations();
    return s;
}

static void report(const char *tag, unsigned long seq, const char *reason, int cpus,
                   struct meminfo m, double load_cores, double work_rate, double demand_cores,
                   double demand_mem_mib, long step, int started)
{
    emit("%s seq=%lu uptime_ms=%lld reason=%s online_cpus=%d mem_total_kib=%ld "
         "mem_available_kib=%ld load_cores=%.3f work_rate=%.0f demand_cores=%.3f "
         "demand_mem_mib=%.0f mem_held_mib=%d step=%ld started=%d%s%s",
         tag, seq, (long long)(now_ns(CLOCK_BOOTTIME) / 1000000), reason, cpus, m.total_kib,
         m.available_kib, load_cores, work_rate, demand_cores, demand_mem_mib,
         __atomic_load_n(&g_held_mib, __ATOMIC_RELAXED), step, started,
         strcmp(tag, "PRESCULPT-READY") == 0 ? " label=" : "",
         strcmp(tag, "PRESCULPT-READY") == 0 ? spec.label : "");
}

static int run_agent(const char *spec_path)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR1, on_start_signal);
    load_spec(spec_path);
    online_offline_cpus();

    const long hz = sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100;
    int64_t start = now_ns(CLOCK_MONOTONIC);
    /* With start_on_nmi the first step holds until an NMI (or SIGUSR1) arrives; an agent the
     * supervisor restarted starts at once (its start signal came before it died). */
    int started = !spec.start_on_nmi || g_restarted;
    const uint64_t nmi_base = started ? 0 : nmi_count();
    long step = step_at(0);
    double demand_cores = step >= 0 ? spec.steps[step].cpu_cores : 0.0;
    double demand_mem = step >= 0 ? spec.steps[step].mem_mib : 0.0;
    int cpus = online_cpus();
    struct meminfo mem = read_meminfo();

    __atomic_store_n(&g_demand_mem_mib, (int)(demand_mem + 0.5), __ATOMIC_RELAXED);
    set_cpu_demand(demand_cores, cpus);
    pthread_t mem_thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    if (pthread_create(&mem_thread, &attr, memory_main, NULL) != 0)
        emit("PRESCULPT-EVENT kind=thread_failed worker=memory");
    pthread_attr_destroy(&attr);

    unsigned long seq = 0;
    double load_cores = 0.0, work_rate = 0.0;
    report("PRESCULPT-READY", seq++, "ready", cpus, mem, load_cores, work_rate, demand_cores,
           demand_mem, step, started);
    struct sample last = take_sample();
    int64_t next_tick = start + POLL_NS;
    int64_t next_report = start + REPORT_NS;
    for (;;) {
        /* While waiting for the start, look for it every WAIT_POLL_NS (a few ms late at most). */
        while (!started && now_ns(CLOCK_MONOTONIC) < next_tick) {
            int64_t wake = now_ns(CLOCK_MONOTONIC) + WAIT_POLL_NS;
            sleep_until(wake < next_tick ? wake : next_tick);
            if (g_start_signal || nmi_count() > nmi_base)
                break;
        }
        if (started)
            sleep_until(next_tick);
        int64_t now = now_ns(CLOCK_MONOTONIC);
        next_tick += POLL_NS;
        if (next_tick < now)
            next_tick = now + POLL_NS;

        const char *reason = NULL;
        if (!started && (g_start_signal || nmi_count() > nmi_base)) {
            started = 1;
            start = now;
            next_tick = now + POLL_NS;
            reason = "start";
        }
        if (online_offline_cpus() > 0 && !reason)
            reason = "cpus";
        int new_cpus = online_cpus();
        if (new_cpus != cpus && !reason)
            reason = "cpus";
        struct meminfo new_mem = read_meminfo();
        if (new_mem.total_kib != mem.total_kib && !reason)
            reason = "mem";

        long new_step = started ? step_at(now - start) : step_at(0);
        if (new_step != step || new_cpus != cpus) {
            step = new_step;
            demand_cores = step >= 0 ? spec.steps[step].cpu_cores : 0.0;
            demand_mem = step >= 0 ? spec.steps[step].mem_mib : 0.0;
            __atomic_store_n(&g_demand_mem_mib, (int)(demand_mem + 0.5), __ATOMIC_RELAXED);
            set_cpu_demand(demand_cores, new_cpus);
        }
        cpus = new_cpus;
        mem = new_mem;

        if (now >= next_report - POLL_NS / 2) {
            next_report += REPORT_NS;
            if (next_report < now)
                next_report = now + REPORT_NS;
            struct sample cur = take_sample();
            double dt = (double)(cur.mono_ns - last.mono_ns) / 1e9;
            load_cores = (double)(cur.busy_jiffies - last.busy_jiffies) / (double)hz / dt;
            work_rate = (double)(cur.iterations - last.iterations) / dt;
            last = cur;
            if (!reason)
                reason = "tick";
        }
        if (reason)
            report("PRESCULPT-REPORT", seq++, reason, cpus, mem, load_cores, work_rate,
                   demand_cores, demand_mem, step, started);
    }
    return 0;
}

/* As PID 1: run the agent in a child, reap every orphan, and restart the agent if it dies. */
static int supervise(const char *spec_path)
{
    for (;;) {
        pid_t child = fork();
        if (child == 0)
            return run_agent(spec_path);
        if (child < 0) {
            emit("PRESCULPT-EVENT kind=fork_failed errno=%d", errno);
            sleep(1);
            continue;
        }
        for (;;) {
            int status;
            pid_t pid = waitpid(-1, &status, 0);
            if (pid == child) {
                emit("PRESCULPT-EVENT kind=agent_exit status=%d signal=%d",
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                     WIFSIGNALED(status) ? WTERMSIG(status) : 0);
                break;
            }
            if (pid < 0 && errno == ECHILD)
                break;
        }
        sleep(1);
        g_restarted = 1;
    }
}

int main(int argc, char **argv)
{
    int arg = 1;
    if (arg < argc && strcmp(argv[arg], "-n") == 0) {
        g_online_cpus = 0;
        arg++;
    }
    const char *spec_path = arg < argc ? argv[arg] : DEFAULT_SPEC_PATH;
    setvbuf(stdout, NULL, _IONBF, 0);
    if (getpid() == 1)
        return supervise(spec_path);
    return run_agent(spec_path);
}
