// The workload of ../python/_common.py with pgjdbc (Debian's libpostgresql-jdbc-java), run by
// tests/it/drivers.rs through pgwarden: PGW_WORKERS threads, each with its own Connection from
// DriverManager (autocommit off: pgjdbc sends BEGIN before a transaction's first statement), PGW_ITERS
// iterations of seq = 0, 1, ...; by seq % 4:
//   0, 2  a transaction inserting (worker, seq, seq) that commits;
//   1     a transaction that inserts, hits `select 1/0` (22012), runs one more statement in the failed
//         transaction (25P02), rolls back, then inserts the row again in a new transaction that commits;
//   3     a transaction that inserts and rolls back.
// After every iteration the worker reads its own count and sum and counts a mismatch when they differ from
// what it committed. Halfway it reads them READ_BURST times in a row, records how many statements its server
// session has prepared (pg_prepared_statements), then closes its connection and opens a new one.
//
// pgjdbc counts the executions of each SQL text per connection (its statement cache) and, from the
// prepareThreshold-th (default 5) on, uses a server-side prepared statement named S_1, S_2, ...: the same
// names on every connection, so a server that kept them from a previous client makes the Parse fail (42P05).
//
// args[0] names the settings:
//   `defaults`  pgjdbc's defaults (prepareThreshold=5);
//   `today`     prepareThreshold=0 in the URL, what PgBouncer's transaction-mode users set: never a
//               server-side prepared statement, always the unnamed one;
//   `readonly`  not the workload: runbook 003's analytics client with setReadOnly(true) (readOnlyMode=always,
//               autocommit: pgjdbc sends SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY), reading and
//               then writing; then, after it disconnects, another client (pgjdbc's defaults) that writes.
//   `connect`   not the workload: connects once with pgjdbc's defaults and reports how that went.
//   `version`   prints the driver's version (setup.sh's check that the driver loads).
// Settings come from PGW_HOST, PGW_PORT, PGW_USER, PGW_PASSWORD, PGW_DB, PGW_WORKERS, PGW_ITERS. Each worker
// prints one line:
//   RESULT worker=W committed=N sum=S states=22012,25P02,... mismatches=M prepared=P pids=1,2
// `readonly` prints:
//   RESULT client=readonly pid=P setting=on rows=N write_state=25006 write_error=...
//   RESULT client=next pid=P setting=off inserted=1
// `connect` prints:
//   RESULT connected=yes   or   RESULT connected=no state=08P01 error=FATAL:_...

import java.sql.Connection;
import java.sql.Driver;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeSet;
import java.util.stream.Collectors;

public final class PgWorkload {
    // More runs than pgjdbc's default prepareThreshold (5).
    static final int READ_BURST = 6;
    static final String INSERT = "insert into ledger (worker, seq, amount) values (?, ?, ?)";
    static final String HOT = "select count(*), coalesce(sum(amount), 0) from ledger where worker = ?";
    static final String[] KINDS = {"commit", "error", "commit", "rollback"};

    final Map<String, String> env = System.getenv();
    final String profile;
    final int iters;

    PgWorkload(String profile) {
        this.profile = profile;
        this.iters = Integer.parseInt(env.getOrDefault("PGW_ITERS", "16"));
    }

    String url() {
        String url = "jdbc:postgresql://" + env.get("PGW_HOST") + ":" + env.get("PGW_PORT") + "/"
                + env.get("PGW_DB") + "?connectTimeout=20&loginTimeout=20";
        return profile.equals("today") ? url + "&prepareThreshold=0" : url;
    }

    Connection connect(Properties extra) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", env.get("PGW_USER"));
        p.setProperty("password", env.get("PGW_PASSWORD"));
        p.putAll(extra);
        return DriverManager.getConnection(url(), p);
    }

    static synchronized void emit(String line) {
        System.out.println("RESULT " + line);
        System.out.flush();
    }

    static String state(SQLException e) {
        return e.getSQLState() != null ? e.getSQLState() : "none:" + e.getClass().getSimpleName();
    }

    final class Worker {
        final int w;
        int committed = 0;
        long sum = 0;
        final List<String> states = new ArrayList<>();
        int mismatches = 0;
        long prepared = -1;
        final TreeSet<Integer> pids = new TreeSet<>();

        Worker(int w) {
            this.w = w;
        }

        void check(Connection conn) throws SQLException {
            try (PreparedStatement ps = conn.prepareStatement(HOT)) {
                ps.setInt(1, w);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    if (rs.getLong(1) != committed || rs.getLong(2) != sum) mismatches++;
                }
            }
        }

        void insert(Connection conn, int seq) throws SQLException {
            try (PreparedStatement ps = conn.prepareStatement(INSERT)) {
                ps.setInt(1, w);
                ps.setInt(2, seq);
                ps.setInt(3, seq);
                ps.executeUpdate();
            }
        }

        long scalar(Connection conn, String sql) throws SQLException {
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
                rs.next();
                return rs.getLong(1);
            }
        }

        void run() throws SQLException {
            Connection conn = connect(new Properties());
            try {
                conn.setAutoCommit(false);
                for (int seq = 0; seq < iters; seq++) {
                    if (seq == iters / 2) {
                        for (int i = 0; i < READ_BURST; i++) check(conn);
                        prepared = scalar(conn, "select count(*) from pg_prepared_statements");
                        conn.commit();
                        conn.close();
                        conn = connect(new Properties());
                        conn.setAutoCommit(false);
                    }
                    String k = KINDS[seq % 4];
                    if (k.equals("error")) {
                        insert(conn, seq);
                        for (String sql : new String[] {"select 1/0", "select 1"}) {
                            try (Statement st = conn.createStatement()) {
                                st.execute(sql);
                                states.add("none:succeeded");
                            } catch (SQLException e) {
                                states.add(state(e));
                            }
                        }
                        conn.rollback();
                    }
                    insert(conn, seq);
                    if (k.equals("rollback")) {
                        conn.rollback();
                    } else {
                        pids.add((int) scalar(conn, "select pg_backend_pid()"));
                        conn.commit();
                        committed++;
                        sum += seq;
                    }
                    check(conn);
                    // Ends the read's transaction, so transaction pooling can hand the server on.
                    conn.commit();
                }
            } finally {
                conn.close();
            }
            emit("worker=" + w + " committed=" + committed + " sum=" + sum + " states="
                    + String.join(",", states) + " mismatches=" + mismatches + " prepared=" + prepared
                    + " pids=" + pids.stream().map(String::valueOf).collect(Collectors.joining(",")));
        }
    }

    int workload() throws InterruptedException {
        int workers = Integer.parseInt(env.getOrDefault("PGW_WORKERS", "20"));
        List<String> failures = Collections.synchronizedList(new ArrayList<>());
        List<Thread> threads = new ArrayList<>();
        for (int w = 0; w < workers; w++) {
            Worker worker = new Worker(w);
            Thread t = new Thread(() -> {
                try {
                    worker.run();
                } catch (Exception e) {
                    failures.add("worker " + worker.w + ": " + e);
                }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) t.join();
        for (String f : failures) System.err.println(f);
        return failures.isEmpty() ? 0 : 1;
    }

    int readonly() throws SQLException {
        Properties ro = new Properties();
        ro.setProperty("readOnlyMode", "always");
        try (Connection a = connect(ro); Statement st = a.createStatement()) {
            a.setAutoCommit(true);
            a.setReadOnly(true);
            long pid;
            String setting;
            try (ResultSet rs = st.executeQuery(
                    "select pg_backend_pid(), current_setting('default_transaction_read_only')")) {
                rs.next();
                pid = rs.getLong(1);
                setting = rs.getString(2);
            }
            long rows;
            try (ResultSet rs = st.executeQuery("select count(*) from ledger")) {
                rs.next();
                rows = rs.getLong(1);
            }
            String state = "none";
            String error = "none";
            try {
                st.executeUpdate("insert into ledger (worker, seq, amount) values (1, 1, 1)");
            } catch (SQLException e) {
                state = state(e);
                error = firstLine(e);
            }
            emit("client=readonly pid=" + pid + " setting=" + setting + " rows=" + rows + " write_state="
                    + state + " write_error=" + error);
        }
        try (Connection b = connect(new Properties()); Statement st = b.createStatement()) {
            long pid;
            String setting;
            try (ResultSet rs = st.executeQuery(
                    "select pg_backend_pid(), current_setting('default_transaction_read_only')")) {
                rs.next();
                pid = rs.getLong(1);
                setting = rs.getString(2);
            }
            int inserted = st.executeUpdate("insert into ledger (worker, seq, amount) values (2, 2, 2)");
            emit("client=next pid=" + pid + " setting=" + setting + " inserted=" + inserted);
        }
        return 0;
    }

    static String firstLine(SQLException e) {
        return e.getMessage().lines().findFirst().orElse("").replace(' ', '_');
    }

    int connectOnly() {
        try (Connection c = connect(new Properties()); Statement st = c.createStatement()) {
            st.execute("select 1");
            emit("connected=yes");
        } catch (SQLException e) {
            emit("connected=no state=" + state(e) + " error=" + firstLine(e));
        }
        return 0;
    }

    public static void main(String[] args) throws Exception {
        String profile = args.length > 0 ? args[0] : "defaults";
        int status;
        switch (profile) {
            case "defaults":
            case "today":
                status = new PgWorkload(profile).workload();
                break;
            case "readonly":
                status = new PgWorkload(profile).readonly();
                break;
            case "connect":
                status = new PgWorkload(profile).connectOnly();
                break;
            case "version":
                Driver d = DriverManager.getDriver("jdbc:postgresql:");
                System.out.println("pgjdbc " + d.getMajorVersion() + "." + d.getMinorVersion() + " ("
                        + d.getClass().getPackage().getImplementationVersion() + ")");
                status = 0;
                break;
            default:
                System.err.println(
                        "unknown settings \"" + profile + "\": defaults, today, readonly, connect or version");
                status = 2;
        }
        System.exit(status);
    }
}
