package v1

import (
	"reflect"
	"strings"
	"time"
)

// OpenAPI returns the OpenAPI 3.0 document of the API. Schemas are
// generated from the Go types by reflection, so they cannot drift from
// what the server encodes.
func OpenAPI() map[string]any {
	g := &schemaGen{defs: map[string]any{}}
	for _, t := range []any{Instance{}, Node{}, Image{}, PullRequest{}, ErrorBody{}, ExecRequest{}, TenantRequest{}, TenantToken{}, Quota{}, Event{},
		Tenant{}, TenantUpdate{}, TokenRequest{}, Token{}} {
		g.ref(reflect.TypeOf(t))
	}
	g.defs["InstanceList"] = listSchema("Instance")
	g.defs["NodeList"] = listSchema("Node")
	g.defs["ImageList"] = listSchema("Image")
	g.defs["EventList"] = listSchema("Event")
	g.defs["TenantList"] = listSchema("Tenant")
	g.defs["TokenList"] = listSchema("Token")
	g.defs["InstanceWatchEvent"] = map[string]any{"type": "object", "properties": map[string]any{
		"type":   map[string]any{"type": "string", "enum": []string{"ADDED", "MODIFIED", "DELETED"}},
		"object": map[string]any{"$ref": "#/components/schemas/Instance"},
	}}
	return map[string]any{
		"openapi": "3.0.3",
		"info":    map[string]any{"title": "Cube API", "version": Version},
		"components": map[string]any{
			"schemas":         g.defs,
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
		},
		"security": []any{map[string]any{"bearer": []string{}}},
		"paths":    paths(),
	}
}

func listSchema(item string) map[string]any {
	return map[string]any{"type": "object", "properties": map[string]any{
		"items":           map[string]any{"type": "array", "items": map[string]any{"$ref": "#/components/schemas/" + item}},
		"resourceVersion": map[string]any{"type": "string"},
		"continue":        map[string]any{"type": "string", "description": "set when more items remain: pass it back as ?continue= for the next page"},
	}}
}

type schemaGen struct{ defs map[string]any }

var timeType = reflect.TypeOf(time.Time{})

// ref returns a schema for t, registering named structs under components.
func (g *schemaGen) ref(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t.Kind() == reflect.Struct:
		name := t.Name()
		if _, ok := g.defs[name]; !ok {
			g.defs[name] = nil // break cycles
			g.defs[name] = g.object(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	case t.Kind() == reflect.Slice:
		return map[string]any{"type": "array", "items": g.ref(t.Elem())}
	case t.Kind() == reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.ref(t.Elem())}
	case t.Kind() == reflect.String:
		return map[string]any{"type": "string"}
	case t.Kind() == reflect.Bool:
		return map[string]any{"type": "boolean"}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return map[string]any{"type": "integer"}
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return map[string]any{"type": "number"}
	}
	return map[string]any{}
}

func (g *schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = g.ref(f.Type)
	}
	return map[string]any{"type": "object", "properties": props}
}

func op(summary, okSchema string, params ...string) map[string]any {
	o := map[string]any{"summary": summary, "responses": map[string]any{
		"default": map[string]any{"description": "error", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/ErrorBody"}}}},
	}}
	if okSchema != "" {
		o["responses"].(map[string]any)["200"] = map[string]any{"description": "ok", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/" + okSchema}}}}
	}
	var ps []any
	for _, p := range params {
		in := "query"
		if p == "name" || p == "id" {
			in = "path"
		}
		typ := "string"
		if p == "limit" {
			typ = "integer"
		}
		ps = append(ps, map[string]any{"name": p, "in": in, "required": in == "path", "schema": map[string]any{"type": typ}})
	}
	if ps != nil {
		o["parameters"] = ps
	}
	return o
}

// accepted documents an operation that answers 202 with the instance: the
// node acts on it later.
func accepted(o map[string]any) map[string]any {
	o["responses"].(map[string]any)["202"] = map[string]any{"description": "accepted: the node acts on it; wait for the phase", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Instance"}}}}
	return o
}

func paths() map[string]any {
	return map[string]any{
		"/v1/instances": map[string]any{
			"get":  op("List instances (paged with limit and continue), or stream changes with watch=true (one InstanceWatchEvent per line)", "InstanceList", "watch", "labelSelector", "fieldSelector", "resourceVersion", "limit", "continue"),
			"post": op("Create an instance", "Instance"),
		},
		"/v1/instances/{name}": map[string]any{
			"get":    op("Read an instance", "Instance", "name"),
			"delete": op("Delete an instance (force=true stops a live one)", "Instance", "name", "force"),
		},
		"/v1/instances/{name}/status": map[string]any{"put": op("Report status (node tokens only)", "Instance", "name", "tenant")},
		"/v1/instances/{name}/wait": map[string]any{
			"get": op("Long-poll until the instance reaches a state; 408 with the current state on timeout", "Instance", "name", "state", "timeout"),
		},
		"/v1/instances/{name}/suspend": map[string]any{
			"post": accepted(op("Ask the node to save a Running microvm instance to disk and stop it (202; 409 unless Running; runc cannot)", "", "name")),
		},
		"/v1/instances/{name}/resume": map[string]any{
			"post": accepted(op("Ask the node to resume a Suspended instance (202; 409 unless Suspended)", "", "name")),
		},
		"/v1/instances/{name}/logs": map[string]any{"get": op("Container logs (text)", "", "name", "container", "follow", "tail", "since", "until", "timestamps")},
		"/v1/instances/{name}/exec": map[string]any{"post": op("Run a command in a container (HTTP upgrade to the cube-stream framing)", "", "name")},
		"/v1/events": map[string]any{
			"get": op("List the tenant's events, oldest first (for=NAME, types=Warning), or stream them with watch=true", "EventList", "for", "types", "watch", "resourceVersion", "limit", "continue"),
		},
		"/v1/nodes": map[string]any{"get": op("List nodes (paged with limit and continue)", "NodeList", "limit", "continue")},
		"/v1/nodes/{name}": map[string]any{
			"get": op("Read a node", "Node", "name"),
			"put": op("Register a node (node tokens only)", "Node", "name"),
		},
		"/v1/nodes/{name}/heartbeat": map[string]any{"post": op("Renew a node's lease (node tokens only)", "", "name")},
		"/v1/images":                 map[string]any{"get": op("List the tenant's images (paged with limit and continue)", "ImageList", "limit", "continue")},
		"/v1/tenants": map[string]any{
			"get":  op("List tenants (admin tokens only)", "TenantList"),
			"post": op("Create a tenant and a first token for it (admin tokens only; 409 if it exists)", "TenantToken"),
		},
		"/v1/tenants/{name}": map[string]any{
			"get":    op("Read a tenant (admin tokens, or the tenant's own)", "Tenant", "name"),
			"patch":  op("Change only the fields a TenantUpdate sets (admin tokens only)", "Tenant", "name"),
			"delete": op("Remove a tenant and revoke its tokens; 409 while it has instances unless force=true, which deletes them (admin tokens only)", "", "name", "force"),
		},
		"/v1/tokens": map[string]any{
			"get":  op("List tokens without secrets: the admin's every tenant's (tenant=NAME filters), others their own tenant's", "TokenList", "tenant"),
			"post": op("Mint a token (TokenRequest); its secret is in this answer only", "Token"),
		},
		"/v1/tokens/{id}":   map[string]any{"delete": op("Revoke a token by ID; the next request with it is 401", "", "id")},
		"/v1/images/import": map[string]any{"post": op("Import an OCI-layout or docker-archive tar (request body)", "ImageList")},
		"/v1/images/pull":   map[string]any{"post": op("Pull an image from a registry", "Image")},
	}
}
