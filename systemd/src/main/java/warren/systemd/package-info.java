/**
 * systemd support, never required: {@link warren.systemd.SdNotify} (READY, STOPPING, STATUS,
 * WATCHDOG, any KEY=VALUE; a no-op without $NOTIFY_SOCKET) and {@link warren.systemd.ListenFds}
 * (LISTEN_FDS/LISTEN_FDNAMES with the LISTEN_PID check). The fd store (FDSTORE=1 with SCM_RIGHTS),
 * MAINPID handover and the unit files arrive with the upgrade issue.
 */
package warren.systemd;
