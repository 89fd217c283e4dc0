// Command pause is the pod sandbox's PID 1 for the local stack's real node: it holds the
// pod's namespaces, reaps orphaned children and exits on SIGINT/SIGTERM. The upstream
// pause image lives in a registry the local stack never pulls from, so this one is built
// with the other tools and packed into an OCI archive (rlscale.devstack.images).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
