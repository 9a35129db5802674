package warren.linux.net;

/** Run in a child process by {@link TunSteeringLoadTest}: loads low16 and prints the outcome. */
public final class SteeringProbe {
    private SteeringProbe() {}

    public static void main(String[] args) {
        try (warren.fdpass.Fd prog = TunSteering.load("warren_probe", TunSteering.low16())) {
            System.out.println("loaded " + prog.number());
        } catch (SteeringException e) {
            System.out.println("notPermitted=" + e.notPermitted() + " errno=" + e.errno() + " " + e.getMessage());
        }
    }
}
