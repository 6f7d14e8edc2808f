package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab"
)

// MaxParticipants bounds the participants of one workshop.
const MaxParticipants = 200

// Participant is a learner in a workshop, under a display name.
type Participant struct {
	Learner  string // the learner's id
	Workshop string // the workshop's id
	Name     string // display name, stored as typed (trimmed): escape it when showing it
	Lab      string // the participant's current lab id, "" when none
	JoinedAt time.Time
	LastRun  *LastRun // nil until the participant finished a run
}

// LastRun is the last run a learner finished (see RecordRun).
type LastRun struct {
	Lesson   string
	Scenario string
	Variant  string
	Status   string
	Leaks    int
	At       time.Time
	Outcome  string // what the run showed (leak, breach, ...), "" when recorded before outcomes were
}

// Join adds a participant with that display name to the workshop, as a new
// learner, and returns it with the learner's token, which the caller hands
// to the browser (in a cookie) and which is not kept. The name is trimmed
// and must be 1 to MaxNameLen characters without control characters
// (EINVALID) and must not look like a name already used in the workshop:
// the same ignoring case, compatibility forms and Cyrillic or Greek
// look-alikes of Latin letters (NameKey; ECONFLICT). An unknown workshop is ENOTFOUND, an ended one ECONFLICT, a
// full one EUNAVAILABLE.
func (s *Store) Join(ctx context.Context, workshopID, name string) (Participant, string, error) {
	if err := s.ready(); err != nil {
		return Participant{}, "", err
	}
	name, err := CleanName(name)
	if err != nil {
		return Participant{}, "", err
	}
	if !plausibleID(workshopID) {
		return Participant{}, "", notFoundWorkshop()
	}
	p := Participant{Workshop: workshopID, Name: name}
	var token string
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := lockOpenWorkshop(ctx, tx, workshopID); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM rlslab.participants WHERE workshop_id = $1", workshopID).Scan(&n); err != nil {
			return err
		}
		if n >= MaxParticipants {
			return rlslab.Errorf(rlslab.EUNAVAILABLE, "the workshop is full (%d participants)", MaxParticipants)
		}
		// The workshop's row is locked: no one joins it meanwhile. Names
		// that look alike are one name (NameKey).
		rows, err := tx.Query(ctx, "SELECT name FROM rlslab.participants WHERE workshop_id = $1", workshopID)
		if err != nil {
			return err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		key := NameKey(name)
		for _, other := range names {
			if NameKey(other) == key {
				return errNameTaken(other)
			}
		}
		l, t, err := createLearner(ctx, tx)
		if err != nil {
			return err
		}
		p.Learner, token = l.ID, t
		err = tx.QueryRow(ctx,
			"INSERT INTO rlslab.participants (learner_id, workshop_id, name) VALUES ($1, $2, $3) RETURNING joined_at",
			p.Learner, workshopID, name).Scan(&p.JoinedAt)
		if sqlState(err) == uniqueViolation {
			return errNameTaken(name)
		}
		return err
	})
	if err != nil {
		return Participant{}, "", wrap("joining a workshop", err)
	}
	return p, token, nil
}

// errNameTaken is the error for a display name already used in a workshop.
func errNameTaken(name string) error {
	return rlslab.Errorf(rlslab.ECONFLICT, "someone in this workshop is already called %q: pick another name", name)
}

// participantQuery selects what scanParticipant reads; a WHERE clause follows.
const participantQuery = `
SELECT p.learner_id, p.workshop_id, p.name, coalesce(p.lab_id, ''), p.joined_at,
	l.last_run_lesson, l.last_run_scenario, l.last_run_variant, l.last_run_status, l.last_run_leaks, l.last_run_at, l.last_run_outcome
FROM rlslab.participants p JOIN rlslab.learners l ON l.id = p.learner_id
`

// scanParticipant scans one row of participantQuery.
func scanParticipant(row pgx.CollectableRow) (Participant, error) {
	var (
		p                                 Participant
		lesson, scenario, variant, status *string
		leaks                             *int
		at                                *time.Time
		outcome                           string
	)
	if err := row.Scan(&p.Learner, &p.Workshop, &p.Name, &p.Lab, &p.JoinedAt,
		&lesson, &scenario, &variant, &status, &leaks, &at, &outcome); err != nil {
		return Participant{}, err
	}
	if at != nil {
		p.LastRun = &LastRun{Lesson: *lesson, Scenario: *scenario, Variant: *variant, Status: *status, Leaks: *leaks, At: *at, Outcome: outcome}
	}
	return p, nil
}

// Participant returns the participant that the learner is, or ENOTFOUND
// when the learner is in no workshop.
func (s *Store) Participant(ctx context.Context, learnerID string) (Participant, error) {
	if err := s.ready(); err != nil {
		return Participant{}, err
	}
	notFound := rlslab.Errorf(rlslab.ENOTFOUND, "not a workshop participant")
	if !plausibleID(learnerID) {
		return Participant{}, notFound
	}
	rows, err := s.pool.Query(ctx, participantQuery+"WHERE p.learner_id = $1", learnerID)
	if err != nil {
		return Participant{}, wrap("reading a participant", err)
	}
	p, err := pgx.CollectExactlyOneRow(rows, scanParticipant)
	if errors.Is(err, pgx.ErrNoRows) {
		return Participant{}, notFound
	}
	return p, wrap("reading a participant", err)
}

// Participants returns the workshop's participants in the order they
// joined, with their lab ids and last runs, or ENOTFOUND for an unknown
// workshop.
func (s *Store) Participants(ctx context.Context, workshopID string) ([]Participant, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if _, err := s.Workshop(ctx, workshopID); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, participantQuery+"WHERE p.workshop_id = $1 ORDER BY p.seq", workshopID)
	if err != nil {
		return nil, wrap("listing participants", err)
	}
	ps, err := pgx.CollectRows(rows, scanParticipant)
	if err != nil {
		return nil, wrap("listing participants", err)
	}
	if ps == nil {
		ps = []Participant{}
	}
	return ps, nil
}

// SetParticipantLab records the participant's current lab (the caller
// created it for them); "" clears it. It fails with ENOTFOUND when the
// learner is in no workshop, EINVALID for a bad lab id and ECONFLICT once
// the workshop has ended (so every lab set is among those EndWorkshop
// returns).
func (s *Store) SetParticipantLab(ctx context.Context, learnerID, labID string) error {
	if err := s.ready(); err != nil {
		return err
	}
	if labID != "" {
		if err := checkLabID(labID); err != nil {
			return err
		}
	}
	if !plausibleID(learnerID) {
		return rlslab.Errorf(rlslab.ENOTFOUND, "not a workshop participant")
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// FOR SHARE on the workshop row waits for (and then sees) a
		// concurrent EndWorkshop, which updates that row first.
		var ended bool
		err := tx.QueryRow(ctx, `
SELECT w.ended_at IS NOT NULL
FROM rlslab.participants p JOIN rlslab.workshops w ON w.id = p.workshop_id
WHERE p.learner_id = $1
FOR SHARE OF w`, learnerID).Scan(&ended)
		if errors.Is(err, pgx.ErrNoRows) {
			return rlslab.Errorf(rlslab.ENOTFOUND, "not a workshop participant")
		}
		if err != nil {
			return err
		}
		if ended {
			return rlslab.Errorf(rlslab.ECONFLICT, "the workshop has ended")
		}
		lab := &labID
		if labID == "" {
			lab = nil
		}
		_, err = tx.Exec(ctx, "UPDATE rlslab.participants SET lab_id = $2 WHERE learner_id = $1", learnerID, lab)
		return err
	})
	return wrap("setting a participant's lab", err)
}
