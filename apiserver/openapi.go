package apiserver

import (
	"net/http"

	v1 "github.com/cube-platform/cube/api/v1"
)

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, v1.OpenAPI())
}
