package apiserver

import (
	"reflect"
	"strconv"
	"strings"

	"github.com/invopop/jsonschema"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// OpenAPI builds the OpenAPI 3.1 document of every registered kind from its
// Go types, so the document can never drift from what the decoder accepts.
func (a *API) OpenAPI() map[string]any {
	kinds := make([]*kind, 0, len(a.kinds))
	for _, info := range a.Kinds() {
		k, _ := a.kind(info.Collection)
		kinds = append(kinds, k)
	}
	a.mu.RLock()
	endpoints := append([]*endpoint(nil), a.endpoints...)
	a.mu.RUnlock()

	schemas := map[string]any{
		"Problem":  reflectSchema(reflect.TypeFor[api.Problem]()),
		"Event":    reflectSchema(reflect.TypeFor[api.Event]()),
		"ListMeta": reflectSchema(reflect.TypeFor[api.ListMeta]()),
	}
	paths := map[string]any{}
	problem := map[string]any{"$ref": "#/components/schemas/Problem"}
	errResp := func(desc string) map[string]any {
		return map[string]any{"description": desc, "content": map[string]any{api.ProblemContentType: map[string]any{"schema": problem}}}
	}
	for _, k := range kinds {
		name := k.info.Kind
		schemas[name] = reflectSchema(k.objType)
		ref := map[string]any{"$ref": "#/components/schemas/" + name}
		listName := name + "List"
		schemas[listName] = map[string]any{
			"type": "object",
			"properties": map[string]any{
				"kind":     map[string]any{"type": "string"},
				"items":    map[string]any{"type": "array", "items": ref},
				"metadata": map[string]any{"$ref": "#/components/schemas/ListMeta"},
			},
		}
		one := func(code, desc string) map[string]any {
			return map[string]any{code: map[string]any{"description": desc, "content": map[string]any{"application/json": map[string]any{"schema": ref}}},
				"400": errResp("invalid request"), "401": errResp("not authenticated"),
				"403": errResp("not allowed (the project is visible to the caller)"),
				"404": errResp("not found, or in a project the caller cannot see"), "409": errResp("conflict")}
		}
		body := map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": ref}}}
		coll, item := "/v1/"+k.info.Collection, "/v1/"+k.info.Collection+"/{name}"
		params := []any{}
		if k.info.Scope == api.ScopeProject {
			coll, item = "/v1/projects/{project}/"+k.info.Collection, "/v1/projects/{project}/"+k.info.Collection+"/{name}"
			params = append(params, pathParam("project"))
		}
		listParams := append([]any{}, params...)
		for _, q := range []string{"limit", "continue", "labelSelector", "watch", "since"} {
			listParams = append(listParams, map[string]any{"name": q, "in": "query", "schema": map[string]any{"type": "string"}})
		}
		paths[coll] = map[string]any{
			"get": map[string]any{"operationId": "list" + name, "tags": []string{k.info.Component}, "parameters": listParams,
				"responses": map[string]any{
					"200": map[string]any{"description": "a page of " + k.info.Collection + ", or with watch=true a stream of events",
						"content": map[string]any{
							"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/" + listName}},
							NDJSONContentType:  map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Event"}},
						}},
					"400": errResp("invalid query"), "401": errResp("not authenticated"), "403": errResp("not allowed"),
					"404": errResp("a project the caller cannot see"), "410": errResp("revision compacted")}},
			"post": map[string]any{"operationId": "create" + name, "tags": []string{k.info.Component}, "parameters": params, "requestBody": body, "responses": one("201", "created")},
		}
		if k.info.Scope == api.ScopeProject {
			paths["/v1/"+k.info.Collection] = map[string]any{
				"get": map[string]any{"operationId": "list" + name + "AllProjects", "tags": []string{k.info.Component},
					"summary": "list or watch " + k.info.Collection + " across the projects the caller may see", "parameters": listParams[1:],
					"responses": paths[coll].(map[string]any)["get"].(map[string]any)["responses"]},
			}
		}
		itemParams := append(append([]any{}, params...), pathParam("name"))
		paths[item] = map[string]any{
			"get":    map[string]any{"operationId": "get" + name, "tags": []string{k.info.Component}, "parameters": itemParams, "responses": one("200", "the "+k.info.Singular)},
			"put":    map[string]any{"operationId": "update" + name, "tags": []string{k.info.Component}, "parameters": itemParams, "requestBody": body, "responses": one("200", "updated")},
			"delete": map[string]any{"operationId": "delete" + name, "tags": []string{k.info.Component}, "parameters": itemParams, "responses": one("200", "deleted; the last state")},
		}
		paths[item+"/status"] = map[string]any{
			"put": map[string]any{"operationId": "update" + name + "Status", "tags": []string{k.info.Component}, "parameters": itemParams, "requestBody": body, "responses": one("200", "status updated")},
		}
		for _, ac := range k.actions {
			op := operation(ac.OperationID, ac.Summary, k.info.Component, itemParams, nil, &ac.Handler, name, errResp)
			resp := op["responses"].(map[string]any)
			resp["401"] = errResp("not authenticated")
			resp["403"] = errResp("not allowed " + k.info.Component + "." + k.info.Collection + "." + ac.Verb + " (the object is visible to the caller)")
			resp["404"] = errResp("no such " + k.info.Singular + ", or one the caller cannot see")
			addOperation(paths, item+"/"+ac.Name, ac.Method, op)
		}
	}
	for _, e := range endpoints {
		path := e.Path
		if e.docPath != "" {
			path = e.docPath
		}
		names, _ := pathParams(path)
		// OpenAPI has no rest-of-path parameter: {name...} is shown as
		// {name}, whose value may hold slashes.
		path = strings.ReplaceAll(path, "...}", "}")
		params := []any{}
		for _, n := range names {
			params = append(params, pathParam(n))
		}
		op := operation(e.OperationID, e.Summary, e.component, params, e.Query, &e.Handler, "", errResp)
		resp := op["responses"].(map[string]any)
		switch e.Access {
		case AccessPublic:
			op["security"] = []any{} // no credentials needed
		case AccessAuthenticated:
			resp["401"] = errResp("not authenticated")
		case AccessPermission:
			resp["401"] = errResp("not authenticated")
			resp["403"] = errResp("not allowed " + e.component + "." + e.Collection + "." + e.Verb)
			resp["404"] = errResp("not found, or in a project the caller cannot see")
		}
		addOperation(paths, path, e.Method, op)
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": "UltraCloud API", "version": "v1"},
		"paths":   paths,
		"components": map[string]any{
			"schemas":         schemas,
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
		},
		"security": []any{map[string]any{"bearer": []any{}}},
	}
}

// operation documents one endpoint or action served by h: its parameters,
// request body and responses, with schemas reflected from h's Go types. A
// response of type api.Object refers to the schema of kind (if set).
func operation(id, summary, tag string, params []any, query []string, h *Handler, kind string, errResp func(string) map[string]any) map[string]any {
	ps := append([]any{}, params...)
	for _, q := range query {
		ps = append(ps, map[string]any{"name": q, "in": "query", "schema": map[string]any{"type": "string"}})
	}
	op := map[string]any{"operationId": id, "tags": []string{tag}, "parameters": ps}
	if summary != "" {
		op["summary"] = summary
	}
	resp := map[string]any{"default": errResp("an error")}
	if h.request != nil {
		op["requestBody"] = map[string]any{"required": true,
			"content": map[string]any{"application/json": map[string]any{"schema": reflectSchema(h.request)}}}
		resp["413"] = errResp("request body too large")
		resp["415"] = errResp("request body is not JSON")
	}
	if h.request != nil || len(query) > 0 || len(params) > 0 {
		resp["400"] = errResp("invalid request")
	}
	ok := map[string]any{"description": "success"}
	switch {
	case h.stream:
		ok["description"] = "a stream of " + h.mediaType + " that lasts until the client or the server ends it"
		ok["content"] = map[string]any{h.mediaType: map[string]any{}}
	case h.response != nil:
		var schema any = reflectSchema(h.response)
		if kind != "" && h.response == reflect.TypeFor[api.Object]() {
			schema = map[string]any{"$ref": "#/components/schemas/" + kind}
		}
		ok["content"] = map[string]any{h.mediaType: map[string]any{"schema": schema}}
	}
	resp[strconv.Itoa(h.status)] = ok
	op["responses"] = resp
	return op
}

// addOperation adds op under path and method to paths.
func addOperation(paths map[string]any, path, method string, op map[string]any) {
	item, _ := paths[path].(map[string]any)
	if item == nil {
		item = map[string]any{}
		paths[path] = item
	}
	item[strings.ToLower(method)] = op
}

func pathParam(name string) map[string]any {
	return map[string]any{"name": name, "in": "path", "required": true, "schema": map[string]any{"type": "string"}}
}

// reflectSchema renders t as an inline JSON Schema (2020-12, the dialect of
// OpenAPI 3.1). Unknown fields are not allowed, matching the strict decoder.
func reflectSchema(t reflect.Type) *jsonschema.Schema {
	r := &jsonschema.Reflector{DoNotReference: true, Anonymous: true, ExpandedStruct: true}
	s := r.ReflectFromType(t)
	s.Version = ""
	return s
}
