// pgjdbc on pgwarden's admin console (run by tests/it/admin_conns.rs as a single-file source program, so it
// needs no compile step): pgjdbc speaks only the extended query protocol. Reads PGW_HOST, PGW_PORT,
// PGW_USER, PGW_PASSWORD, PGW_DB and prints one line per check:
//   RESULT check=<name> columns=<comma-separated names> rows=<n> first=<first value of the first row>
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class ConsoleCheck {
    static void report(String check, ResultSet r) throws SQLException {
        ResultSetMetaData m = r.getMetaData();
        StringBuilder cols = new StringBuilder();
        for (int i = 1; i <= m.getColumnCount(); i++) {
            if (i > 1) cols.append(',');
            cols.append(m.getColumnName(i));
        }
        int rows = 0;
        String first = "";
        while (r.next()) {
            if (rows == 0) first = String.valueOf(r.getString(1)).split(" ")[0];
            rows++;
        }
        System.out.println("RESULT check=" + check + " columns=" + cols + " rows=" + rows + " first=" + first);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + System.getenv("PGW_HOST") + ":" + System.getenv("PGW_PORT") + "/"
                + System.getenv("PGW_DB");
        Properties props = new Properties();
        props.setProperty("user", System.getenv("PGW_USER"));
        props.setProperty("password", System.getenv("PGW_PASSWORD"));
        try (Connection c = DriverManager.getConnection(url, props)) {
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SHOW POOLS")) {
                report("statement", r);
            }
            // Past prepareThreshold (5): a named server-side statement, binary where pgjdbc wants it.
            try (PreparedStatement p = c.prepareStatement("SHOW STATS")) {
                for (int i = 0; i < 7; i++) {
                    try (ResultSet r = p.executeQuery()) {
                        report("prepared" + i, r);
                    }
                }
            }
            try (Statement s = c.createStatement()) {
                try {
                    s.executeQuery("SHOW nothing");
                } catch (SQLException e) {
                    System.out.println("RESULT check=error sqlstate=" + e.getSQLState());
                }
                s.execute("RECONNECT");
                System.out.println("RESULT check=command updates=" + s.getUpdateCount());
            }
        }
    }
}
