package warren.benchmarks;

import java.util.Arrays;
import java.util.List;
import java.util.function.ToDoubleFunction;

/**
 * One iperf3 bulk TCP run: what {@code iperf3 -J} reported (receiver's rate, the sender's
 * retransmitted segments, bytes received, the client's CPU) and the CPU seconds the iperf3 server
 * and each part of the relay used during it. Plus the statistics the benchmark prints over runs:
 * median and interquartile range (p25-p75, linear interpolation between ranks).
 */
record BulkRun(double gbps, double retransmits, double gigabytes, double clientCpu, double serverCpu, double[] parts) {

    /** The figures of an {@code iperf3 -J} client run; server and relay CPU filled in by the caller. */
    static BulkRun parse(String iperfJson, double serverCpu, double[] parts) {
        double seconds = number(iperfJson, "sum_sent", "seconds");
        return new BulkRun(number(iperfJson, "sum_received", "bits_per_second") / 1e9,
                number(iperfJson, "sum_sent", "retransmits"), number(iperfJson, "sum_received", "bytes") / 1e9,
                number(iperfJson, "cpu_utilization_percent", "host_total") / 100 * seconds, serverCpu, parts);
    }

    /** CPU seconds per GB received of relay part {@code i}. */
    double partPerGb(int i) {
        return parts[i] / gigabytes;
    }

    /** The first number after {@code "key":} inside the object {@code "section"} (iperf3's JSON); NaN if absent. */
    static double number(String json, String section, String key) {
        int at = json.indexOf("\"" + section + "\"");
        int k = at < 0 ? -1 : json.indexOf("\"" + key + "\":", at);
        if (k < 0) {
            return Double.NaN;
        }
        String rest = json.substring(k + key.length() + 3).stripLeading();
        int end = 0;
        while (end < rest.length() && "0123456789.eE+-".indexOf(rest.charAt(end)) >= 0) {
            end++;
        }
        return end == 0 ? Double.NaN : Double.parseDouble(rest.substring(0, end));
    }

    /** The {@code q}-quantile (0..1) of the values that are numbers, linear between ranks; NaN if none. */
    static double quantile(double[] v, double q) {
        double[] s = Arrays.stream(v).filter(x -> !Double.isNaN(x)).sorted().toArray();
        if (s.length == 0) {
            return Double.NaN;
        }
        double r = q * (s.length - 1);
        int lo = (int) Math.floor(r);
        int hi = Math.min(lo + 1, s.length - 1);
        return s[lo] + (r - lo) * (s[hi] - s[lo]);
    }

    static double median(double[] v) {
        return quantile(v, 0.5);
    }

    static double median(List<BulkRun> runs, ToDoubleFunction<BulkRun> f) {
        return median(runs.stream().mapToDouble(f).toArray());
    }

    /** "median (p25-p75)" of {@code f} over {@code runs}, with {@code format} for each number. */
    static String iqr(List<BulkRun> runs, ToDoubleFunction<BulkRun> f, String format) {
        double[] v = runs.stream().mapToDouble(f).toArray();
        return String.format(format + " (" + format + "-" + format + ")", median(v), quantile(v, 0.25), quantile(v, 0.75));
    }
}
