package store

import (
	"strings"
	"testing"
)

// TestNameKeyIsCaseConsistent: for every look-alike in the table, a name
// in upper case has the same key as its key in upper case (FuzzCleanName
// found 'υ', whose own key was u while 'Υ' became y).
func TestNameKeyIsCaseConsistent(t *testing.T) {
	for r := range lookAlike {
		for _, s := range []string{string(r), strings.ToUpper(string(r)), strings.ToLower(string(r))} {
			key := NameKey(s)
			if NameKey(strings.ToUpper(s)) != NameKey(strings.ToUpper(key)) {
				t.Errorf("NameKey(upper %q) = %q, NameKey(upper of its key %q) = %q", s, NameKey(strings.ToUpper(s)), key, NameKey(strings.ToUpper(key)))
			}
		}
	}
}
