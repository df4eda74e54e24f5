// A JDBC client for gateway/tests/postgres/test_clients.py, run by a real JVM with Debian's
// pgjdbc: java -cp /usr/share/java/postgresql.jar JdbcClient.java URL USER SCENARIO [ARG]
// (the password is the AIRLOCK_TOKEN environment variable). It prints one line per check.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.io.StringReader;
import java.io.StringWriter;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;

public class JdbcClient {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", System.getenv("AIRLOCK_TOKEN"));
        try (Connection conn = DriverManager.getConnection(args[0], props)) {
            switch (args[2]) {
                case "basics" -> basics(conn);
                case "denied" -> denied(conn, args[3]);
                case "copy-cancel-notify" -> copyCancelNotify(conn);
                case "masked" -> masked(conn);
                case "query" -> query(conn, args[3]);
                default -> throw new IllegalArgumentException("unknown scenario " + args[2]);
            }
        }
    }

    static void basics(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement()) {
            try (ResultSet rs = st.executeQuery("SELECT current_user")) {
                rs.next();
                System.out.println("user " + rs.getString(1));
            }
            try (ResultSet rs = st.executeQuery("SELECT count(*) FROM items")) {
                rs.next();
                System.out.println("items " + rs.getLong(1));
            }
        }
        List<String> names = new ArrayList<>();
        try (PreparedStatement ps = conn.prepareStatement("SELECT name FROM items WHERE id = ?")) {
            for (int id = 1; id <= 8; id++) {
                ps.setInt(1, id);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    names.add(rs.getString(1));
                }
            }
        }
        System.out.println("prepared " + String.join("|", names));
        try (Statement st = conn.createStatement()) {
            st.execute("CREATE TEMP TABLE jdbc_seen (id int, label text)");
        }
        try (PreparedStatement ps = conn.prepareStatement("INSERT INTO jdbc_seen VALUES (?, ?)")) {
            for (int i = 0; i < 5; i++) {
                ps.setInt(1, i);
                ps.setString(2, "row " + i);
                ps.addBatch();
            }
            System.out.println("batch " + Arrays.toString(ps.executeBatch()));
        }
        conn.setAutoCommit(false);
        try (Statement st = conn.createStatement()) {
            st.executeUpdate("DELETE FROM jdbc_seen");
            conn.rollback();
            conn.setAutoCommit(true);
            try (ResultSet rs = st.executeQuery("SELECT count(*) FROM jdbc_seen WHERE id >= 5")) {
                rs.next();
                System.out.println("rolled back " + rs.getLong(1));
            }
        }
        try (PreparedStatement ps = conn.prepareStatement("SELECT ?::text, NULL::text")) {
            ps.setString(1, "żółw ✓ 🐢");
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                System.out.println("unicode " + rs.getString(1) + "|" + rs.getString(2));
            }
        }
        try (PreparedStatement ps = conn.prepareStatement("SELECT price, ?::numeric FROM items WHERE id = 2")) {
            ps.setBigDecimal(1, new java.math.BigDecimal("2.5"));
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                System.out.println("numeric " + rs.getBigDecimal(1) + "|" + rs.getBigDecimal(2));
            }
        }
    }

    static void denied(Connection conn, String marker) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement("SELECT ?::text")) {
            ps.setString(1, marker);
            ps.executeQuery();
            System.out.println("not denied");
        } catch (SQLException e) {
            System.out.println("denied " + e.getSQLState() + " " + ((org.postgresql.util.PSQLException) e).getServerErrorMessage().getMessage());
        }
        conn.setAutoCommit(false);
        try (Statement st = conn.createStatement()) {
            try {
                st.executeQuery("SELECT '" + marker + "'");
            } catch (SQLException e) {
                // the transaction is now aborted: the next statement fails as in PostgreSQL
            }
            try {
                st.executeQuery("SELECT 1");
                System.out.println("in transaction ran");
            } catch (SQLException e) {
                System.out.println("in transaction " + e.getSQLState());
            }
            conn.rollback();
            try (ResultSet rs = st.executeQuery("SELECT 1")) {
                rs.next();
                System.out.println("after rollback " + rs.getInt(1));
            }
        }
    }

    static void copyCancelNotify(Connection conn) throws Exception {
        CopyManager copy = conn.unwrap(PGConnection.class).getCopyAPI();
        try (Statement st = conn.createStatement()) {
            st.execute("CREATE TEMP TABLE jdbc_copy (id int, label text)");
        }
        long in = copy.copyIn("COPY jdbc_copy FROM STDIN", new StringReader("1\tone\n2\tżółw\n3\t\\N\n"));
        StringWriter out = new StringWriter();
        long copiedOut = copy.copyOut("COPY (SELECT id, label FROM jdbc_copy ORDER BY id) TO STDOUT", out);
        System.out.println("copy " + in + " " + copiedOut + " " + out.toString().replace("\n", "|").replace("\t", ","));
        try (Statement sleeper = conn.createStatement()) {
            Thread canceller = new Thread(() -> {
                try {
                    Thread.sleep(500);
                    sleeper.cancel();
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            canceller.start();
            long started = System.nanoTime();
            try {
                sleeper.execute("SELECT pg_sleep(20)");
                System.out.println("cancel not cancelled");
            } catch (SQLException e) {
                long ms = (System.nanoTime() - started) / 1_000_000;
                System.out.println("cancel " + e.getSQLState() + (ms < 10_000 ? " in time" : " late"));
            }
            canceller.join();
        }
        try (Statement st = conn.createStatement()) {
            st.execute("LISTEN jdbc_jobs");
            st.execute("NOTIFY jdbc_jobs, 'ready ✓'");
            PGNotification[] got = conn.unwrap(PGConnection.class).getNotifications(10_000);
            System.out.println("notify " + (got == null ? "none" : got[0].getName() + " " + got[0].getParameter()));
            try (ResultSet rs = st.executeQuery("SELECT 'usable'")) {
                rs.next();
                System.out.println("after " + rs.getString(1));
            }
        }
    }

    static void masked(Connection conn) throws SQLException {
        // Past pgjdbc's prepareThreshold the statement is a named server-side one and the
        // int column comes back in binary.
        try (PreparedStatement ps = conn.prepareStatement("SELECT email, pin, notes FROM jdbc_people WHERE id = ?")) {
            for (int round = 1; round <= 7; round++) {
                ps.setInt(1, 1);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    Object pin = rs.getObject(2);
                    System.out.println("row " + round + " " + rs.getString(1) + "|" + pin + "|" + rs.getString(3));
                }
            }
        }
    }

    static void query(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            System.out.println(rs.getString(1));
        }
    }
}
