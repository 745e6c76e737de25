package v1

import (
	"encoding/json"
	"testing"
)

// TestOpenAPIListsPage keeps the list schemas and the paged list paths in
// step with List: every key a full page encodes is in the schema, and each
// paged endpoint documents limit and continue.
func TestOpenAPIListsPage(t *testing.T) {
	doc := OpenAPI()
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	b, _ := json.Marshal(List[*Instance]{Items: []*Instance{}, ResourceVersion: "7", Continue: "x"})
	var page map[string]any
	_ = json.Unmarshal(b, &page)
	for _, list := range []string{"InstanceList", "ImageList", "NodeList"} {
		props := schemas[list].(map[string]any)["properties"].(map[string]any)
		for k := range page {
			if _, ok := props[k]; !ok {
				t.Errorf("%s schema lacks %q, which a list page encodes", list, k)
			}
		}
	}
	paths := doc["paths"].(map[string]any)
	for _, p := range []string{"/v1/instances", "/v1/images", "/v1/nodes"} {
		get := paths[p].(map[string]any)["get"].(map[string]any)
		params, _ := get["parameters"].([]any)
		found := map[string]string{}
		for _, x := range params {
			m := x.(map[string]any)
			found[m["name"].(string)] = m["schema"].(map[string]any)["type"].(string)
		}
		if found["limit"] != "integer" || found["continue"] != "string" {
			t.Errorf("GET %s parameters %v; want limit (integer) and continue (string)", p, found)
		}
	}
}
