package warren.daemon.testing.livefuzz;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What the live fuzzer found, grouped by kind (the text up to the first digit, so one bug seen a
 * thousand times is one line with a count and its first example). Thread-safe.
 */
public final class Findings {
    private final Map<String, List<String>> byKind = new LinkedHashMap<>();
    private final Map<String, Integer> counts = new LinkedHashMap<>();
    private final Map<String, Integer> notes = new java.util.TreeMap<>();

    /** Something worth counting that is not the daemon's fault (e.g. a message this side's kernel would not send). */
    public synchronized void note(String what) {
        notes.merge(what, 1, Integer::sum);
    }

    private final Map<String, java.util.concurrent.atomic.LongAdder> answers = new java.util.concurrent.ConcurrentHashMap<>();

    /** One answer of this kind (its body, or "Error CODE"), for the report. */
    public void answer(String kind) {
        answers.computeIfAbsent(kind, k -> new java.util.concurrent.atomic.LongAdder()).increment();
    }

    /** Answers by kind, most first. */
    public String answers() {
        StringBuilder s = new StringBuilder();
        answers.entrySet().stream().sorted((a, b) -> Long.compare(b.getValue().sum(), a.getValue().sum()))
                .forEach(e -> s.append(s.length() == 0 ? "" : ", ").append(e.getKey()).append(' ').append(e.getValue().sum()));
        return s.toString();
    }

    /** Forgets the answers counted so far (after the warm-up round). */
    public void resetAnswers() {
        answers.clear();
    }

    public synchronized Map<String, Integer> notes() {
        return new java.util.TreeMap<>(notes);
    }

    public synchronized void add(String finding) {
        String kind = finding.replaceAll("[0-9].*", "").strip();
        counts.merge(kind, 1, Integer::sum);
        List<String> examples = byKind.computeIfAbsent(kind, k -> new ArrayList<>());
        if (examples.size() < 3) {
            examples.add(finding);
        }
    }

    public synchronized boolean isEmpty() {
        return counts.isEmpty();
    }

    public synchronized int total() {
        return counts.values().stream().mapToInt(Integer::intValue).sum();
    }

    @Override
    public synchronized String toString() {
        StringBuilder s = new StringBuilder();
        s.append("answers: ").append(answers()).append('\n');
        if (!notes.isEmpty()) {
            s.append("notes (not findings): ").append(notes).append('\n');
        }
        if (counts.isEmpty()) {
            return s.append("no findings").toString();
        }
        byKind.forEach((kind, examples) -> {
            s.append(counts.get(kind)).append(" x ").append(kind).append('\n');
            for (String e : examples) {
                s.append("    e.g. ").append(e.length() > 600 ? e.substring(0, 600) + "..." : e).append('\n');
            }
        });
        return s.toString();
    }
}
