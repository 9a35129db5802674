/**
 * systemd support, never required: sd_notify (READY, RELOADING, STOPPING, STATUS, MAINPID,
 * WATCHDOG, FDSTORE), LISTEN_FDS/LISTEN_FDNAMES with the LISTEN_PID check, and the unit files.
 * Arrives with the upgrade issue; until then daemons bind their own control sockets.
 */
package warren.systemd;
