package ember

import "testing"

func TestShellJoin(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"/usr/bin/app"}, "/usr/bin/app"},
		{[]string{"./app", "-case", "standalone", "--addr=127.0.0.1:7077"}, "./app -case standalone --addr=127.0.0.1:7077"},
		{[]string{"app", "two words", ""}, "app 'two words' ''"},
		{[]string{"app", "it's", "$HOME", "a;b"}, `app 'it'\''s' '$HOME' 'a;b'`},
	}
	for _, tt := range tests {
		if got := shellJoin(tt.args); got != tt.want {
			t.Errorf("shellJoin(%q) = %s, want %s", tt.args, got, tt.want)
		}
	}
}
