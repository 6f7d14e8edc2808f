// Package scenarios holds rlslab's scenarios, one file each, written only
// against the exported API of package engine: each reads like its lesson,
// a script of requests and what they show.
package scenarios
