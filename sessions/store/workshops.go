package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab"
)

// MaxWorkshopLessons bounds the lessons of one workshop.
const MaxWorkshopLessons = 50

// codeAttempts bounds how many fresh join codes CreateWorkshop tries when
// a code is already taken by an open workshop.
const codeAttempts = 10

// Workshop is a facilitator's room: a title, lessons in order, a join code
// and the lesson everyone is on. Its facilitator secret is not kept, only
// its hash.
type Workshop struct {
	ID            string
	Title         string
	Lessons       []string // lesson slugs in order
	Code          string   // join code, unique among open workshops
	CurrentLesson int      // index into Lessons
	Expected      int      // participants the facilitator expects (0: not said)
	CreatedAt     time.Time
	EndedAt       time.Time // zero while the workshop is open
}

// Ended reports whether the workshop has been ended.
func (w Workshop) Ended() bool { return !w.EndedAt.IsZero() }

// checkLessons checks a workshop's lesson list: 1 to MaxWorkshopLessons
// distinct slugs.
func checkLessons(lessons []string) error {
	if len(lessons) == 0 {
		return rlslab.Errorf(rlslab.EINVALID, "a workshop needs at least one lesson")
	}
	if len(lessons) > MaxWorkshopLessons {
		return rlslab.Errorf(rlslab.EINVALID, "a workshop has at most %d lessons, not %d", MaxWorkshopLessons, len(lessons))
	}
	seen := make(map[string]bool, len(lessons))
	for _, l := range lessons {
		if err := checkSlug("lesson", l); err != nil {
			return err
		}
		if seen[l] {
			return rlslab.Errorf(rlslab.EINVALID, "the lesson %q is listed twice", l)
		}
		seen[l] = true
	}
	return nil
}

// CreateWorkshop stores a new workshop and returns it with its facilitator
// secret, which the caller hands to the facilitator (in a link or cookie)
// and which is not kept. The title is trimmed (1 to MaxTitleLen characters);
// lessons are slugs in order. Bad input is EINVALID.
func (s *Store) CreateWorkshop(ctx context.Context, title string, lessons []string) (Workshop, string, error) {
	if err := s.ready(); err != nil {
		return Workshop{}, "", err
	}
	title, err := cleanText("title", title, MaxTitleLen)
	if err != nil {
		return Workshop{}, "", err
	}
	if err := checkLessons(lessons); err != nil {
		return Workshop{}, "", err
	}
	secret := newToken()
	w := Workshop{ID: randomString(idBytes), Title: title, Lessons: append([]string(nil), lessons...)}
	for range codeAttempts {
		w.Code = newCode()
		err = s.pool.QueryRow(ctx, `
INSERT INTO rlslab.workshops (id, title, lessons, code, facilitator_hash) VALUES ($1, $2, $3, $4, $5)
RETURNING created_at`, w.ID, w.Title, w.Lessons, w.Code, hashSecret(secret)).Scan(&w.CreatedAt)
		if sqlState(err) != uniqueViolation {
			break
		}
		s.log.Warn("store: join code taken, trying another", "code", w.Code)
	}
	if err != nil {
		return Workshop{}, "", wrap("creating a workshop", err)
	}
	s.log.Info("store: workshop created", "workshop", w.ID, "lessons", len(w.Lessons))
	return w, secret, nil
}

// workshopColumns are the columns scanWorkshop reads, in order.
const workshopColumns = "id, title, lessons, code, current_lesson, expected, created_at, ended_at"

// scanWorkshop scans one row of workshopColumns.
func scanWorkshop(row pgx.Row) (Workshop, error) {
	var (
		w     Workshop
		ended *time.Time
	)
	err := row.Scan(&w.ID, &w.Title, &w.Lessons, &w.Code, &w.CurrentLesson, &w.Expected, &w.CreatedAt, &ended)
	if ended != nil {
		w.EndedAt = *ended
	}
	return w, err
}

// notFoundWorkshop is the error for an unknown workshop.
func notFoundWorkshop() error {
	return rlslab.Errorf(rlslab.ENOTFOUND, "no such workshop")
}

// MaxExpected is the most participants a workshop may say it expects.
const MaxExpected = 2000

// SetExpected records how many participants workshop id expects (0 to
// MaxExpected; EINVALID otherwise, ENOTFOUND for an unknown workshop).
func (s *Store) SetExpected(ctx context.Context, id string, n int) error {
	if err := s.ready(); err != nil {
		return err
	}
	if n < 0 || n > MaxExpected {
		return rlslab.Errorf(rlslab.EINVALID, "expected participants %d: want 0 to %d", n, MaxExpected)
	}
	if !plausibleID(id) {
		return notFoundWorkshop()
	}
	tag, err := s.pool.Exec(ctx, "UPDATE rlslab.workshops SET expected = $2 WHERE id = $1", id, n)
	if err != nil {
		return wrap("setting a workshop's expected size", err)
	}
	if tag.RowsAffected() == 0 {
		return notFoundWorkshop()
	}
	return nil
}

// OpenWorkshops returns the workshops not yet ended, newest first.
func (s *Store) OpenWorkshops(ctx context.Context) ([]Workshop, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, "SELECT "+workshopColumns+" FROM rlslab.workshops WHERE ended_at IS NULL ORDER BY created_at DESC LIMIT 1000")
	if err != nil {
		return nil, wrap("listing open workshops", err)
	}
	defer rows.Close()
	var out []Workshop
	for rows.Next() {
		w, err := scanWorkshop(rows)
		if err != nil {
			return nil, wrap("listing open workshops", err)
		}
		out = append(out, w)
	}
	return out, wrap("listing open workshops", rows.Err())
}

// Workshop returns the workshop with that id, or ENOTFOUND.
func (s *Store) Workshop(ctx context.Context, id string) (Workshop, error) {
	if err := s.ready(); err != nil {
		return Workshop{}, err
	}
	if !plausibleID(id) {
		return Workshop{}, notFoundWorkshop()
	}
	w, err := scanWorkshop(s.pool.QueryRow(ctx, "SELECT "+workshopColumns+" FROM rlslab.workshops WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Workshop{}, notFoundWorkshop()
	}
	return w, wrap("reading a workshop", err)
}

// WorkshopByCode returns the open workshop with that join code, as a
// person typed it (case, spaces and hyphens do not matter), or ENOTFOUND.
// Ended workshops are not found by code.
func (s *Store) WorkshopByCode(ctx context.Context, code string) (Workshop, error) {
	if err := s.ready(); err != nil {
		return Workshop{}, err
	}
	code = NormalizeCode(code)
	if code == "" {
		return Workshop{}, rlslab.Errorf(rlslab.ENOTFOUND, "no open workshop has that code")
	}
	w, err := scanWorkshop(s.pool.QueryRow(ctx,
		"SELECT "+workshopColumns+" FROM rlslab.workshops WHERE code = $1 AND ended_at IS NULL", code))
	if errors.Is(err, pgx.ErrNoRows) {
		return Workshop{}, rlslab.Errorf(rlslab.ENOTFOUND, "no open workshop has that code")
	}
	return w, wrap("reading a workshop", err)
}

// VerifyFacilitator checks the facilitator secret of a workshop, comparing
// hashes in constant time. It returns nil when the secret is right,
// EFORBIDDEN when it is wrong and ENOTFOUND for an unknown workshop.
func (s *Store) VerifyFacilitator(ctx context.Context, id, secret string) error {
	if err := s.ready(); err != nil {
		return err
	}
	if !plausibleID(id) {
		return notFoundWorkshop()
	}
	var stored []byte
	err := s.pool.QueryRow(ctx, "SELECT facilitator_hash FROM rlslab.workshops WHERE id = $1", id).Scan(&stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFoundWorkshop()
	}
	if err != nil {
		return wrap("reading a workshop", err)
	}
	if len(secret) > maxTokenLen || !sameHash(secret, stored) {
		return rlslab.Errorf(rlslab.EFORBIDDEN, "only the workshop's facilitator may do this")
	}
	return nil
}

// lockOpenWorkshop locks the workshop's row for the rest of tx and fails
// with ENOTFOUND when it does not exist and ECONFLICT when it has ended.
// It returns the number of its lessons.
func lockOpenWorkshop(ctx context.Context, tx pgx.Tx, id string) (lessons int, err error) {
	var ended bool
	err = tx.QueryRow(ctx,
		"SELECT cardinality(lessons), ended_at IS NOT NULL FROM rlslab.workshops WHERE id = $1 FOR UPDATE", id).
		Scan(&lessons, &ended)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, notFoundWorkshop()
	}
	if err != nil {
		return 0, err
	}
	if ended {
		return 0, rlslab.Errorf(rlslab.ECONFLICT, "the workshop has ended")
	}
	return lessons, nil
}

// SetCurrentLesson moves everyone in the workshop to the lesson at index
// (0-based into Workshop.Lessons). It fails with EINVALID for an index out
// of range, ENOTFOUND for an unknown workshop and ECONFLICT once it ended.
// The caller checks that a facilitator asked.
func (s *Store) SetCurrentLesson(ctx context.Context, id string, index int) error {
	if err := s.ready(); err != nil {
		return err
	}
	if !plausibleID(id) {
		return notFoundWorkshop()
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		n, err := lockOpenWorkshop(ctx, tx, id)
		if err != nil {
			return err
		}
		if index < 0 || index >= n {
			return rlslab.Errorf(rlslab.EINVALID, "no lesson %d: the workshop has lessons 1 to %d", index+1, n)
		}
		_, err = tx.Exec(ctx, "UPDATE rlslab.workshops SET current_lesson = $2 WHERE id = $1", id, index)
		return err
	})
	return wrap("moving a workshop to a lesson", err)
}

// EndWorkshop marks the workshop ended and returns the lab ids of its
// participants, so the caller can drop those labs. Ending an ended
// workshop changes nothing and returns its lab ids again. After the end,
// nobody joins and no lab id is set. An unknown workshop is ENOTFOUND.
func (s *Store) EndWorkshop(ctx context.Context, id string) ([]string, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if !plausibleID(id) {
		return nil, notFoundWorkshop()
	}
	var labs []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE rlslab.workshops SET ended_at = coalesce(ended_at, now()) WHERE id = $1", id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return notFoundWorkshop()
		}
		rows, err := tx.Query(ctx,
			"SELECT lab_id FROM rlslab.participants WHERE workshop_id = $1 AND lab_id IS NOT NULL ORDER BY seq", id)
		if err != nil {
			return err
		}
		labs, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, wrap("ending a workshop", err)
	}
	s.log.Info("store: workshop ended", "workshop", id, "labs", len(labs))
	if labs == nil {
		labs = []string{}
	}
	return labs, nil
}
