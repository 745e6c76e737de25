package node

import (
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
)

func TestLostShimOf(t *testing.T) {
	term := func(name string, code, restarts int) v1.ContainerStatus {
		return v1.ContainerStatus{Name: name, State: v1.ContainerTerminated, ExitCode: code, RestartCount: restarts}
	}
	tests := []struct {
		name      string
		policy    v1.RestartPolicy
		max       int
		cs        v1.ContainerStatus
		wantEnded bool
		restarts  int
	}{
		{"running", v1.RestartNever, 0, v1.ContainerStatus{Name: "c", State: v1.ContainerRunning, RestartCount: 2}, false, 3},
		{"never, ended", v1.RestartNever, 0, term("c", 0, 0), true, 0},
		{"always, exited", v1.RestartAlways, 0, term("c", 0, 1), false, 2},
		{"on-failure, succeeded", v1.RestartOnFailure, 0, term("c", 0, 0), true, 0},
		{"on-failure, failed", v1.RestartOnFailure, 0, term("c", 1, 0), false, 1},
		{"on-failure, failed at the bound", v1.RestartOnFailure, 2, term("c", 1, 2), true, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &v1.Instance{Spec: v1.InstanceSpec{RestartPolicy: tt.policy, MaxRestarts: tt.max},
				Status: v1.InstanceStatus{Containers: []v1.ContainerStatus{tt.cs}}}
			l := lostShimOf(in)
			st, ended := l.exited["c"]
			if ended != tt.wantEnded || l.restarts["c"] != tt.restarts {
				t.Errorf("ended %v restarts %d; want %v, %d", ended, l.restarts["c"], tt.wantEnded, tt.restarts)
			}
			if ended && (st.ExitCode != tt.cs.ExitCode || st.Name != "c") {
				t.Errorf("ended state %+v; want exit %d", st, tt.cs.ExitCode)
			}
		})
	}
}
